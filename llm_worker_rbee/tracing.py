"""Message tracing: every actor can report what it sends, for the scenario harness."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from typing import Any

import trio

# (recipient, message) -> None. Actors take one and call it for every message they send.
Tracer = Callable[[str, object], None]


def no_trace(recipient: str, message: object) -> None:
    """The default tracer: records nothing."""


def fan_out(*tracers: Tracer) -> Tracer:
    """One tracer that calls several (e.g. the metrics and a scenario's recorder)."""
    active = [t for t in tracers if t is not no_trace]
    if len(active) == 1:
        return active[0]

    def trace(recipient: str, message: object) -> None:
        for tracer in active:
            tracer(recipient, message)

    return trace


def message_fields(message: object) -> dict[str, Any]:
    """A message as plain JSON-able data; reply channels and other live objects are left out."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        return {"value": _plain(message)}
    return {
        f.name: _plain(getattr(message, f.name))
        for f in dataclasses.fields(message)
        if f.compare and not _is_channel(getattr(message, f.name))
    }


def _is_channel(value: object) -> bool:
    return isinstance(value, trio.MemorySendChannel | trio.MemoryReceiveChannel)


def _plain(value: object) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **message_fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class TraceRecorder:
    """Collects (virtual time, recipient, message) records as JSON lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, recipient: str, message: object) -> None:
        record = {
            "t": round(trio.current_time(), 9),
            "to": recipient,
            "type": type(message).__name__,
            **message_fields(message),
        }
        self.lines.append(json.dumps(record, sort_keys=True, ensure_ascii=False))

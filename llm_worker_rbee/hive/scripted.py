"""A hive scripted in virtual time, for the scenario harness (`[hive]` in a scenario file).

It answers the worker's calls by the script (down, hanging or failing between given times,
forgetting the worker when it "restarts"), sends scripted commands, and records every call
and ack with its virtual time, so `[expect.hive]` can check what was sent when, exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import cycle
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field

from llm_worker_rbee.hive.client import HiveListener, Payload
from llm_worker_rbee.messages.hive import (
    HIVE_OK,
    CallKind,
    CommandName,
    HiveCommand,
    HiveOutcome,
    HiveReply,
)

HEARTBEAT_LOGGER = "llm_worker_rbee.actors.heartbeat"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outage(_Strict):
    """Between `start` (inclusive) and `end` (exclusive) the hive does not answer well."""

    start: float
    end: float
    # refuse: connection refused at once; hang: no answer (the worker's call timeout
    # ends it); error: HTTP 503 at once.
    mode: Literal["refuse", "hang", "error"] = "refuse"


class CommandSpec(_Strict):
    at: float
    do: CommandName
    job: str | None = None


class HiveScript(_Strict):
    # ws: like a control channel, an outage or restart also drops the connection.
    transport: Literal["http", "ws"] = "http"
    down: list[Outage] = []
    # The hive restarts at these times and forgets the worker (heartbeats get 404).
    restart_at: list[float] = []
    command: list[CommandSpec] = []
    # What the worker's random source returns for the backoff jitter, in turn (cycled).
    jitter: list[float] = Field(default=[0.0], min_length=1)

    @property
    def url(self) -> str:
        return f"{'ws' if self.transport == 'ws' else 'http'}://scripted-hive"

    def jitter_source(self) -> Callable[[], float]:
        values = cycle(self.jitter)
        return lambda: next(values)


NULL = "<null>"  # TOML has no null: this string stands for it in expected payload fields
MISSING = "<missing>"


class PayloadExpect(_Strict):
    """The payload of the `kind` call received at `at` has these fields (a subset);
    "<null>" expects null, "<missing>" expects no such field."""

    at: float
    kind: CallKind
    fields: dict[str, Any]


class HiveExpect(_Strict):
    # Every call up to `calls_until` (default: all) as "T KIND ANSWER", T with 3 decimals;
    # ANSWER: ok, 404, refused, hang, 503.
    calls: list[str] | None = None
    calls_until: float | None = None
    # "heartbeat" -> calls of that kind; "heartbeat ok" -> those answered so.
    count: dict[str, int] = {}
    payload: list[PayloadExpect] = []
    # Every ack, as "T COMMAND ok|refused DETAIL".
    acks: list[str] | None = None
    # Every line the HeartbeatActor logged, as "T LEVEL message".
    log: list[str] | None = None


@dataclass(frozen=True)
class CallRecord:
    """A call the scripted hive or queen received: when, what (the hive call's kind; the
    worker status a queen heartbeat carries), how it was answered, and its payload."""

    at: float
    what: str
    answer: str
    payload: Payload

    def line(self) -> str:
        return f"{self.at:.3f} {self.what} {self.answer}"

    def matches(self, key: str) -> bool:
        """`key` is "WHAT" or "WHAT ANSWER", as `count` in an expectation names calls."""
        what, _, answer = key.partition(" ")
        return self.what == what and (not answer or self.answer == answer)


class ScriptedHive:
    """A `HiveClient` whose hive is the script; see the module docstring."""

    def __init__(self, script: HiveScript) -> None:
        self.script = script
        self.url = script.url
        self.calls: list[CallRecord] = []
        self.acks: list[str] = []
        self._knows_worker = False
        self._restarts = sorted(script.restart_at)

    async def run(
        self,
        listener: HiveListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            for number, spec in enumerate(self.script.command, 1):
                nursery.start_soon(self._command, listener, spec, f"c{number}")
            if self.script.transport == "ws":
                drops = [o.start for o in self.script.down] + self._restarts
                for at in drops:
                    nursery.start_soon(self._drop_connection, listener, at)
            task_status.started()
            await trio.sleep_forever()

    async def ready(self, payload: Payload) -> HiveReply:
        return await self._answer("ready", payload)

    async def heartbeat(self, payload: Payload) -> HiveReply:
        return await self._answer("heartbeat", payload)

    async def gone(self, payload: Payload) -> HiveReply:
        return await self._answer("gone", payload)

    async def _answer(self, kind: CallKind, payload: Payload) -> HiveReply:
        now = trio.current_time()
        while self._restarts and self._restarts[0] <= now:
            self._restarts.pop(0)
            self._knows_worker = False
        mode = next((o.mode for o in self.script.down if o.start <= now < o.end), None)
        if mode == "refuse":
            return self._record(kind, "refused", payload, HiveOutcome.FAILED, "connection refused")
        if mode == "error":
            return self._record(kind, "503", payload, HiveOutcome.FAILED, "HTTP 503")
        if mode == "hang":
            self._record(kind, "hang", payload, HiveOutcome.FAILED, "")
            await trio.sleep_forever()
        if kind == "heartbeat" and not self._knows_worker:
            return self._record(kind, "404", payload, HiveOutcome.NOT_FOUND, "HTTP 404")
        self._knows_worker = kind != "gone"
        return self._record(kind, "ok", payload, HiveOutcome.OK, "")

    def _record(
        self, kind: CallKind, answer: str, payload: Payload, outcome: HiveOutcome, detail: str
    ) -> HiveReply:
        self.calls.append(CallRecord(trio.current_time(), kind, answer, payload))
        return HIVE_OK if outcome is HiveOutcome.OK else HiveReply(outcome, detail)

    async def _command(self, listener: HiveListener, spec: CommandSpec, command_id: str) -> None:
        await trio.sleep_until(spec.at)
        ack = await listener.on_command(HiveCommand(command_id, spec.do, spec.job))
        verdict = "ok" if ack.ok else "refused"
        self.acks.append(f"{trio.current_time():.3f} {spec.do} {verdict} {ack.detail}")

    async def _drop_connection(self, listener: HiveListener, at: float) -> None:
        await trio.sleep_until(at)
        listener.on_connection_lost()


def check_hive(expect: HiveExpect, hive: ScriptedHive | None, log: list[str]) -> list[str]:
    """What `[expect.hive]` asked for and did not get, one line each."""
    if hive is None:
        return ["hive: [expect.hive] needs a [hive] table"]
    failures: list[str] = []
    if expect.calls is not None:
        seen = _lines_until(hive.calls, expect.calls_until)
        failures += _compare_lines("hive call", expect.calls, seen)
    for key, want in expect.count.items():
        have = sum(c.matches(key) for c in hive.calls)
        if have != want:
            failures.append(f"hive: expected {want} {key!r} calls, got {have}")
    for check in expect.payload:
        call = next(
            (c for c in hive.calls if c.what == check.kind and abs(c.at - check.at) < 1e-9), None
        )
        if call is None:
            failures.append(f"hive: no {check.kind} call at t={check.at:.3f}")
            continue
        where = f"hive: {check.kind} at t={check.at:.3f}"
        failures += _field_failures(where, check.fields, call.payload, _field)
    if expect.acks is not None:
        failures += _compare_lines("hive ack", expect.acks, hive.acks)
    if expect.log is not None:
        failures += _compare_lines("heartbeat log line", expect.log, log)
    return failures


def _lines_until(calls: list[CallRecord], until: float | None) -> list[str]:
    """The calls up to `until` (all when None) as their lines."""
    return [c.line() for c in calls if until is None or c.at <= until + 1e-9]


def _field_failures(
    where: str, fields: dict[str, Any], payload: Payload, read: Callable[[Payload, str], Any]
) -> list[str]:
    """Each of `fields` whose value in `payload` (as `read` finds it) is not the one
    expected ("<null>": null)."""
    failures: list[str] = []
    for name, want in fields.items():
        have = read(payload, name)
        if have != (None if want == NULL else want):
            failures.append(
                f"{where}: expected {name}={want!r}, got {NULL if have is None else have!r}"
            )
    return failures


def _field(payload: Payload, name: str) -> Any:
    return payload.get(name, MISSING)


def _compare_lines(what: str, want: list[str], have: list[str]) -> list[str]:
    for number, (expected, got) in enumerate(zip(want, have, strict=False), 1):
        if expected != got:
            return [f"{what} {number}: expected {expected!r}, got {got!r}"]
    if len(want) != len(have):
        extra = have[len(want) :] or want[len(have) :]
        side = "more" if len(have) > len(want) else "fewer"
        return [f"{what}s: expected {len(want)}, got {len(have)} ({side}; first: {extra[0]!r})"]
    return []


@contextmanager
def captured_log(name: str = HEARTBEAT_LOGGER) -> Iterator[list[str]]:
    """Collects one logger's lines as "T LEVEL message" (T: trio's clock), and keeps them
    from propagating while it does."""
    logger = logging.getLogger(name)
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                at = f"{trio.current_time():.3f}"
            except RuntimeError:  # outside trio.run
                at = "-"
            lines.append(f"{at} {record.levelname} {record.getMessage()}")

    handler = _Collect()
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# -- rbee's queen (`[queen]` in a scenario file) ----------------------------------------------

QUEEN_LOGGER = "llm_worker_rbee.actors.queen_heartbeat"
QUEEN_URL = "http://scripted-queen"


class QueenScript(_Strict):
    """How the queen answers `POST /v1/worker-heartbeat`: `answer` (ok; 404, a queen without
    the route; web_page, rbee's queen, whose web UI answers 200 text/html), or badly during
    the `down` times."""

    answer: Literal["ok", "404", "web_page"] = "ok"
    down: list[Outage] = []


class QueenPayloadExpect(_Strict):
    """The heartbeat received at `at` has these fields (a subset), nested ones named with
    dots (`worker.status`); "<null>" expects null, "<missing>" no such field."""

    at: float
    fields: dict[str, Any]


class QueenExpect(_Strict):
    # Every heartbeat up to `calls_until` (default: all) as "T STATUS ANSWER", T with 3
    # decimals, STATUS the payload's worker.status; ANSWER: ok, 404, web_page, refused,
    # hang, 503.
    calls: list[str] | None = None
    calls_until: float | None = None
    # "ready" -> heartbeats saying ready; "ready ok" -> those answered so; "all" -> every one.
    count: dict[str, int] = {}
    payload: list[QueenPayloadExpect] = []
    # Every line the QueenHeartbeatActor logged, as "T LEVEL message".
    log: list[str] | None = None


class ScriptedQueen:
    """A `QueenClient` whose queen is the script; records every heartbeat with its time."""

    def __init__(self, script: QueenScript) -> None:
        self.script = script
        self.url = QUEEN_URL
        self.calls: list[CallRecord] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def heartbeat(self, payload: Payload) -> HiveReply:
        now = trio.current_time()
        mode = next((o.mode for o in self.script.down if o.start <= now < o.end), None)
        answer = {"refuse": "refused", "error": "503", "hang": "hang", None: self.script.answer}
        self.calls.append(CallRecord(now, str(payload["worker"]["status"]), answer[mode], payload))
        if mode == "hang":
            await trio.sleep_forever()
        if mode is not None:
            detail = "connection refused" if mode == "refuse" else "HTTP 503"
            return HiveReply(HiveOutcome.FAILED, detail)
        if self.script.answer == "404":
            return HiveReply(HiveOutcome.NOT_FOUND, "HTTP 404")
        if self.script.answer == "web_page":
            return HiveReply(HiveOutcome.NOT_FOUND, "HTTP 200 with a web page")
        return HIVE_OK


def check_queen(expect: QueenExpect, queen: ScriptedQueen | None, log: list[str]) -> list[str]:
    """What `[expect.queen]` asked for and did not get, one line each."""
    if queen is None:
        return ["queen: [expect.queen] needs a [queen] table"]
    failures: list[str] = []
    if expect.calls is not None:
        seen = _lines_until(queen.calls, expect.calls_until)
        failures += _compare_lines("queen heartbeat", expect.calls, seen)
    for key, want in expect.count.items():
        every = key.partition(" ")[0] == "all"
        have = sum(every or c.matches(key) for c in queen.calls)
        if have != want:
            failures.append(f"queen: expected {want} {key!r} heartbeats, got {have}")
    for check in expect.payload:
        call = next((c for c in queen.calls if abs(c.at - check.at) < 1e-9), None)
        if call is None:
            failures.append(f"queen: no heartbeat at t={check.at:.3f}")
            continue
        where = f"queen: heartbeat at t={check.at:.3f}"
        failures += _field_failures(where, check.fields, call.payload, _dotted)
    if expect.log is not None:
        failures += _compare_lines("queen log line", expect.log, log)
    return failures


def _dotted(payload: Payload, name: str) -> Any:
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value

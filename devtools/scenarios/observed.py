"""What a scenario's clients and operator saw, as the runner records it for the checks: the
HTTP exchanges, the cancels' statuses, the state looked at each `[[expect.states]]` time,
the worker's exit, and the scripted hive's and queen's logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devtools.scenarios.spec import StateExpect
from llm_worker_rbee.hive.scripted import ScriptedHive, ScriptedQueen
from llm_worker_rbee.testing.asgi import Exchange, SseEvent


@dataclass
class Observed:
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    posts: dict[str, Exchange] = field(default_factory=dict)  # jobs / queen: the POST
    cancel_status: dict[str, int] = field(default_factory=dict)
    states: list[tuple[StateExpect, dict[str, Any]]] = field(default_factory=list)
    exit_code: int | None = None
    stopped_at: float | None = None
    gave_up_at: float | None = None
    hive: ScriptedHive | None = None
    hive_log: list[str] = field(default_factory=list)
    queen: ScriptedQueen | None = None
    queen_log: list[str] = field(default_factory=list)


def streamed_tokens(exchange: Exchange) -> int:
    """Text-carrying events so far: rbee `token` events or OpenAI content chunks."""
    total = 0
    for event in exchange.events:
        if event.name == "token" or rbee_type(event) == "token":
            total += 1
        elif event.name is None and event.data.startswith("{") and rbee_type(event) is None:
            choices = event.json().get("choices") or []
            if choices and (choices[0].get("text") or choices[0].get("delta", {}).get("content")):
                total += 1
    return total


def rbee_type(event: SseEvent) -> str | None:
    """The `type` of a data-only rbee job frame (`started`, `token`, `end`, `error`)."""
    if event.name is not None or not event.data.startswith("{"):
        return None
    kind = event.json().get("type")
    return kind if isinstance(kind, str) else None

"""HeartbeatActor <-> hive: what the worker tells the hive, what it answers, what it commands.

The payloads themselves (ready, heartbeat, gone) are plain JSON objects built by
`llm_worker_rbee.http.system.status`; docs/HIVE_PROTOCOL.md lists every field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import trio

CallKind = Literal["ready", "heartbeat", "gone"]
CommandName = Literal["drain", "shutdown", "cancel", "ping"]
COMMANDS: tuple[str, ...] = get_args(CommandName)


class HiveOutcome(enum.StrEnum):
    OK = "ok"
    # The hive does not know this worker (it restarted): register again.
    NOT_FOUND = "not_found"
    # A timeout, a refusal, a 5xx, a dropped connection: back off and retry.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HiveCall:
    """HeartbeatActor -> hive: one ready, heartbeat or gone, with the state it reports."""

    kind: CallKind
    state: str


@dataclass(frozen=True, slots=True)
class HiveReply:
    """Hive -> HeartbeatActor: how one call went."""

    outcome: HiveOutcome
    # Why it failed, for the one log line per transition: "connection refused", "HTTP 503".
    detail: str = ""


HIVE_OK = HiveReply(HiveOutcome.OK)


@dataclass(frozen=True, slots=True)
class HiveCommand:
    """Hive -> worker over the control channel; every one is acknowledged."""

    id: str
    command: CommandName
    job_id: str | None = None

    @classmethod
    def from_json(cls, message: dict[str, Any]) -> HiveCommand:
        """A command from its wire form.

        Raises:
            ValueError: no string `id`, an unknown command, or `cancel` without `job_id`.
        """
        command_id, name, job_id = message.get("id"), message.get("command"), message.get("job_id")
        if not isinstance(command_id, str) or not command_id:
            raise ValueError("a command needs a string 'id'")
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        if name == "cancel" and (not isinstance(job_id, str) or not job_id):
            raise ValueError("'cancel' needs a string 'job_id'")
        return cls(command_id, name, job_id if isinstance(job_id, str) else None)


@dataclass(frozen=True, slots=True)
class CommandAck:
    """Worker -> hive: the answer to one command."""

    id: str
    command: str
    ok: bool
    # "draining", "stopping", "cancelled", "pong", or why it was refused.
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "ack",
            "id": self.id,
            "command": self.command,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Obey:
    """Hive client -> HeartbeatActor: a command arrived; its ack goes to `reply`."""

    command: HiveCommand
    reply: trio.MemorySendChannel[CommandAck] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """Hive client -> HeartbeatActor: the control channel closed on its own."""


HeartbeatCommand = Obey | ConnectionLost

"""The hive conversation behind one small protocol (`hive/connect.py` picks the transport)."""

from __future__ import annotations

from typing import Any, Protocol

import trio

from llm_worker_rbee.messages.hive import HIVE_OK, CommandAck, HiveCommand, HiveOutcome, HiveReply

Payload = dict[str, Any]

READY_PATH = "/v1/workers/ready"
HEARTBEAT_PATH = "/v1/workers/heartbeat"
GONE_PATH = "/v1/workers/gone"
WEBSOCKET_PATH = "/v1/workers/ws"


class HiveListener(Protocol):
    """Where a hive client sends what the hive tells the worker: the HeartbeatActor's
    handle, which turns each call into a message to the actor's inbox."""

    async def on_command(self, command: HiveCommand) -> CommandAck:
        """A command arrived on the control channel; returns the ack to send back."""
        ...

    def on_connection_lost(self) -> None:
        """The control channel closed on its own: the worker should speak up (and reconnect)."""
        ...


class HiveClient(Protocol):
    """One conversation with a hive. Calls never raise for hive trouble: they answer
    `HiveReply(FAILED, why)`. Calls take no timeouts; the caller bounds them.
    """

    url: str

    async def run(
        self, listener: HiveListener, *, task_status: trio.TaskStatus[None] = ...
    ) -> None:
        """Owns what the conversation needs (an HTTP connection pool, the WebSocket) until
        cancelled; the calls below are made while it runs."""
        ...

    async def ready(self, payload: Payload) -> HiveReply: ...

    async def heartbeat(self, payload: Payload) -> HiveReply: ...

    async def gone(self, payload: Payload) -> HiveReply: ...


def reply_for_status(status: int) -> HiveReply:
    """An HTTP status (or the status in a WebSocket reply) as a HiveReply."""
    if 200 <= status < 300:
        return HIVE_OK
    if status == 404:
        return HiveReply(HiveOutcome.NOT_FOUND, "HTTP 404")
    return HiveReply(HiveOutcome.FAILED, f"HTTP {status}")


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}

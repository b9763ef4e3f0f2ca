"""rbee's queen over HTTP: `POST {queen}/v1/worker-heartbeat` with the worker contract's
`WorkerHeartbeat`, behind one small protocol the QueenHeartbeatActor talks to."""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import trio

from llm_worker_rbee.hive.json_post import JsonPoster
from llm_worker_rbee.messages.hive import HIVE_OK, HiveOutcome, HiveReply

Payload = dict[str, Any]

# rbee's worker-contract: `POST /v1/worker-heartbeat` on the queen.
QUEEN_HEARTBEAT_PATH = "/v1/worker-heartbeat"


class QueenClient(Protocol):
    """Heartbeats to one queen. Calls never raise for queen trouble: they answer
    `HiveReply(FAILED, why)`, or `NOT_FOUND` when the queen has no heartbeat route.
    Calls take no timeouts; the caller bounds them."""

    url: str

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Owns what the calls need (an HTTP connection pool) until cancelled."""
        ...

    async def heartbeat(self, payload: Payload) -> HiveReply: ...


def queen_reply(status: int, content_type: str) -> HiveReply:
    """How a queen's answer reads. rbee's queen at the commit docs/HIVE_PROTOCOL.md names
    has no heartbeat route, and its web UI's fallback answers every unknown path, POSTs
    included, with 200 and its `index.html`: that, a 404 and a 405 all mean "this queen
    takes no heartbeats"."""
    if status in (404, 405):
        return HiveReply(HiveOutcome.NOT_FOUND, f"HTTP {status}")
    if 200 <= status < 300 and content_type.split(";")[0].strip().lower() == "text/html":
        return HiveReply(HiveOutcome.NOT_FOUND, f"HTTP {status} with a web page")
    if 200 <= status < 300:
        return HIVE_OK
    return HiveReply(HiveOutcome.FAILED, f"HTTP {status}")


class HttpQueenClient:
    """Posts each heartbeat as JSON with httpx; no auth (rbee's queen asks for none)."""

    def __init__(self, url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._poster = JsonPoster(url, name="queen", transport=transport)
        self.url = self._poster.url

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._poster.run(task_status=task_status)

    async def heartbeat(self, payload: Payload) -> HiveReply:
        response = await self._poster.post(QUEEN_HEARTBEAT_PATH, payload)
        if isinstance(response, HiveReply):
            return response
        return queen_reply(response.status_code, response.headers.get("content-type", ""))

"""The hive over plain HTTP: `POST {hive}/v1/workers/{ready,heartbeat,gone}` with httpx."""

from __future__ import annotations

import httpx
import trio

from llm_worker_rbee.hive.client import (
    GONE_PATH,
    HEARTBEAT_PATH,
    READY_PATH,
    HiveListener,
    Payload,
    auth_headers,
    reply_for_status,
)
from llm_worker_rbee.hive.json_post import JsonPoster
from llm_worker_rbee.messages.hive import HiveReply


class HttpHiveClient:
    """Posts each payload as JSON. 2xx is acknowledged, 404 means the hive has forgotten
    this worker, anything else (refused, reset, 5xx) is a failure the caller retries.

    An HTTP hive has no way to push commands; it uses the worker's own routes instead
    (`POST /v1/admin/shutdown`, `DELETE /v1/inference/{job_id}`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._poster = JsonPoster(
            url, name="hive", headers=auth_headers(token), transport=transport
        )
        self.url = self._poster.url

    async def run(
        self,
        listener: HiveListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self._poster.run(task_status=task_status)

    async def ready(self, payload: Payload) -> HiveReply:
        return await self._post(READY_PATH, payload)

    async def heartbeat(self, payload: Payload) -> HiveReply:
        return await self._post(HEARTBEAT_PATH, payload)

    async def gone(self, payload: Payload) -> HiveReply:
        return await self._post(GONE_PATH, payload)

    async def _post(self, path: str, payload: Payload) -> HiveReply:
        response = await self._poster.post(path, payload)
        if isinstance(response, HiveReply):
            return response
        return reply_for_status(response.status_code)

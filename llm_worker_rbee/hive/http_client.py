"""The hive over plain HTTP: `POST {hive}/v1/workers/{ready,heartbeat,gone}` with httpx."""

from __future__ import annotations

import logging

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
from llm_worker_rbee.messages.hive import HiveOutcome, HiveReply


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
        self.url = url.rstrip("/")
        self._token = token
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def run(
        self,
        listener: HiveListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # httpx logs every request at INFO: one line per heartbeat would drown the log, which
        # should carry one line per transition (the HeartbeatActor writes those).
        httpx_log = logging.getLogger("httpx")
        httpx_log.setLevel(max(httpx_log.level, logging.WARNING))
        # No timeout here: every call is bounded by its caller's cancel scope.
        async with httpx.AsyncClient(
            base_url=self.url,
            headers=auth_headers(self._token),
            timeout=None,
            transport=self._transport,
        ) as client:
            self._client = client
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._client = None

    async def ready(self, payload: Payload) -> HiveReply:
        return await self._post(READY_PATH, payload)

    async def heartbeat(self, payload: Payload) -> HiveReply:
        return await self._post(HEARTBEAT_PATH, payload)

    async def gone(self, payload: Payload) -> HiveReply:
        return await self._post(GONE_PATH, payload)

    async def _post(self, path: str, payload: Payload) -> HiveReply:
        if self._client is None:
            return HiveReply(HiveOutcome.FAILED, "the hive client is not running")
        try:
            response = await self._client.post(path, json=payload)
        except httpx.ConnectError as exc:
            return HiveReply(HiveOutcome.FAILED, f"cannot connect: {exc or type(exc).__name__}")
        except httpx.HTTPError as exc:
            return HiveReply(HiveOutcome.FAILED, f"{type(exc).__name__}: {exc}".rstrip(": "))
        return reply_for_status(response.status_code)

"""The httpx transport the HTTP hive client and the queen client share: one connection pool
that lives while `run` does, and POSTs whose failures are answers, not exceptions."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import trio

from llm_worker_rbee.messages.hive import HiveOutcome, HiveReply


class JsonPoster:
    """POSTs JSON payloads to paths under one base URL."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`name` says whose client this is in the reply to a call made while it is not
        running; `transport` replaces the network (tests)."""
        self.url = url.rstrip("/")
        self._name = name
        self._headers = headers or {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the connection pool until cancelled."""
        # httpx logs every request at INFO: one line per heartbeat would drown the log, which
        # should carry one line per transition (the actors write those).
        httpx_log = logging.getLogger("httpx")
        httpx_log.setLevel(max(httpx_log.level, logging.WARNING))
        # No timeout here: every call is bounded by its caller's cancel scope.
        async with httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=None, transport=self._transport
        ) as client:
            self._client = client
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._client = None

    async def post(self, path: str, payload: dict[str, Any]) -> httpx.Response | HiveReply:
        """The hive's response, or a FAILED reply when there was none (not running, refused,
        reset, timed out in transit)."""
        if self._client is None:
            return HiveReply(HiveOutcome.FAILED, f"the {self._name} client is not running")
        try:
            return await self._client.post(path, json=payload)
        except httpx.ConnectError as exc:
            return HiveReply(HiveOutcome.FAILED, f"cannot connect: {exc or type(exc).__name__}")
        except httpx.HTTPError as exc:
            return HiveReply(HiveOutcome.FAILED, f"{type(exc).__name__}: {exc}".rstrip(": "))

"""HeartbeatActor: tells the hive the worker is ready, then keeps telling it how it is."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import httpx
import trio

log = logging.getLogger(__name__)

Snapshot = Callable[[], dict[str, Any]]


class HeartbeatActor:
    """Posts `ready` once, then a heartbeat every `interval` seconds.

    Without a hive URL it only logs that it has nobody to talk to. Failures are logged once
    per transition (reachable <-> unreachable), never once per attempt.
    """

    def __init__(
        self, *, hive_url: str | None, interval: float, snapshot: Snapshot, ready_payload: Snapshot
    ) -> None:
        self._hive_url = hive_url.rstrip("/") if hive_url else None
        self._interval = interval
        self._snapshot = snapshot
        self._ready_payload = ready_payload
        self.reachable: bool | None = None
        self.last_success: float | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._hive_url is None:
            log.info("no --hive-url: not registering with a hive")
            task_status.started()
            await trio.sleep_forever()
        task_status.started()
        async with httpx.AsyncClient(timeout=5.0) as client:
            # Serving never waits on the hive: retry the registration in the background.
            for _attempt in itertools.count():
                if await self._post(client, "/v1/workers/ready", self._ready_payload()):
                    break
                await trio.sleep(min(self._interval, 5.0))
            while True:
                await trio.sleep(self._interval)
                await self._post(client, "/v1/workers/heartbeat", self._snapshot())

    async def _post(self, client: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> bool:
        try:
            response = await client.post(f"{self._hive_url}{path}", json=payload)
            ok = response.status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            self.last_success = trio.current_time()
        if ok != self.reachable:
            log.log(
                logging.INFO if ok else logging.WARNING,
                "hive %s is %s",
                self._hive_url,
                "reachable" if ok else "unreachable",
            )
            self.reachable = ok
        return ok

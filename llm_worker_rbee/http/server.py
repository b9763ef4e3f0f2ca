"""Serving the app with hypercorn's trio worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

# The worker drains its own work first (LifecycleActor); by the time hypercorn is told to
# stop, every stream has its final event queued, so this only covers flushing them.
GRACEFUL_TIMEOUT_S = 3.0


async def serve_http(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 30
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)

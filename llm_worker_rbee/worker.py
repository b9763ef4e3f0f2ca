"""Wiring: the actors started in dependency order under one root nursery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from llm_worker_rbee import __version__
from llm_worker_rbee.actors.heartbeat import HeartbeatActor
from llm_worker_rbee.actors.lifecycle import LifecycleActor
from llm_worker_rbee.actors.model import ModelActor
from llm_worker_rbee.actors.scheduler import SlotScheduler
from llm_worker_rbee.actors.session import SessionPool
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import Engine
from llm_worker_rbee.engine.runner import StepRunner
from llm_worker_rbee.http.app import create_app
from llm_worker_rbee.http.server import serve_http
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.lifecycle import WorkerState

log = logging.getLogger(__name__)


async def run_worker(
    settings: Settings,
    *,
    model_id: str,
    engine_factory: Callable[[], Engine],
    runner: StepRunner,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Runs the worker until it is told to stop. Returns the process exit code.

    Start order: lifecycle (signals), HTTP (answers 503 while loading), model, scheduler,
    sessions, heartbeat; then `ready`. Stop order is the reverse, after the drain.
    """
    async with trio.open_nursery() as root:
        lifecycle_actor = LifecycleActor(
            drain_timeout=settings.drain_timeout, handle_signals=handle_signals
        )
        lifecycle = await root.start(lifecycle_actor.run)
        services = Services(settings=settings, lifecycle=lifecycle, model_id=model_id)
        http_done = trio.Event()

        async def http(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_http(
                    create_app(services),
                    host=settings.host,
                    port=settings.port,
                    shutdown_trigger=lifecycle.wait_stopped,
                    task_status=task_status,
                )
            finally:
                http_done.set()

        binds = await root.start(http)
        log.info("listening on %s", " ".join(binds))
        lifecycle.set_state(WorkerState.LOADING)
        model = await root.start(ModelActor(engine_factory, runner).run)
        scheduler = await root.start(SlotScheduler(settings.slots, settings.queue_limit).run)
        sessions = await root.start(SessionPool(model, scheduler).run)
        services.model, services.scheduler, services.sessions = model, scheduler, sessions
        lifecycle.attach_work(sessions)
        heartbeat = HeartbeatActor(
            hive_url=settings.hive_url,
            interval=settings.heartbeat_interval,
            snapshot=lambda: heartbeat_payload(services),
            ready_payload=lambda: ready_payload(services, binds),
        )
        await root.start(heartbeat.run)
        lifecycle.set_state(WorkerState.READY)
        log.info("ready: %s, %d slots, %d context", model_id, settings.slots, settings.ctx_size)
        task_status.started(binds)
        await http_done.wait()
        root.cancel_scope.cancel()
    log.info("stopped (%s)", lifecycle.state.value)
    return 0


def ready_payload(services: Services, binds: list[str]) -> dict[str, Any]:
    settings = services.settings
    return {
        "worker_id": settings.worker_id,
        "url": binds[0] if binds else None,
        "model_ref": settings.model_ref or services.model_id,
        "backend": settings.backend,
        "device": settings.device,
        "slots_total": settings.slots,
        "ctx_size": settings.ctx_size,
        "version": __version__,
    }


def heartbeat_payload(services: Services) -> dict[str, Any]:
    settings = services.settings
    stats = services.scheduler.statistics() if services.scheduler else None
    model_stats = services.model.statistics() if services.model else None
    state = services.lifecycle.state.value
    if state == "ready" and stats is not None and stats.slots_busy == stats.slots_total:
        state = "busy"
    return {
        "worker_id": settings.worker_id,
        "timestamp": time.time(),
        "state": state,
        "slots_total": settings.slots,
        "slots_busy": stats.slots_busy if stats else 0,
        "queue_depth": stats.queue_depth if stats else 0,
        "model_ref": settings.model_ref or services.model_id,
        "device": settings.device,
        "vram_used_bytes": None,
        "vram_total_bytes": None,
        "tokens_generated_total": model_stats.tokens_generated if model_stats else 0,
        "uptime_s": round(trio.current_time() - services.started_at, 3),
    }

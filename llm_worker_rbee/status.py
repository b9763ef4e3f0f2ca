"""What the worker tells the hive (and GET /heartbeat): the ready, heartbeat and gone payloads.

Every field is listed in docs/HIVE_PROTOCOL.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from llm_worker_rbee import __version__
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.metrics import Snapshot

if TYPE_CHECKING:
    from llm_worker_rbee.http.services import Services

Payload = dict[str, Any]


def ready_payload(services: Services, binds: list[str]) -> Payload:
    settings = services.settings
    return {
        "worker_id": settings.worker_id,
        "url": binds[0] if binds else None,
        "model_ref": settings.model_ref or services.model_id,
        "backend": settings.backend,
        "device": settings.device,
        "slots_total": settings.slots,
        "ctx_size": settings.ctx_tokens,
        "version": __version__,
    }


def reported_state(services: Services) -> str:
    """loading, ready, busy (every slot taken), degraded (the last request to reach the
    engine failed there, or its steps keep running out of memory), draining; `stopped` only
    in the worker's last instants."""
    state = services.lifecycle.state
    if state in (WorkerState.STARTING, WorkerState.LOADING):
        return "loading"
    if state is not WorkerState.READY:
        return state.value
    if services.sessions is not None and services.sessions.statistics().failing:
        return "degraded"
    if services.model is not None and services.model.statistics().memory_degraded:
        return "degraded"
    stats = services.scheduler.statistics() if services.scheduler else None
    if stats is not None and stats.slots_busy == stats.slots_total:
        return "busy"
    return "ready"


def heartbeat_payload(services: Services) -> Payload:
    settings = services.settings
    stats = services.scheduler.statistics() if services.scheduler else None
    model_stats = services.model.statistics() if services.model else None
    pool = services.sessions.statistics() if services.sessions else None
    vitals = services.vitals
    last_error: Payload | None = None
    if pool is not None and pool.last_error is not None and pool.last_error_at is not None:
        ago = trio.current_time() - pool.last_error_at
        last_error = {
            "code": pool.last_error.code,
            "message": pool.last_error.message,
            "at": round(services.wall_clock() - ago, 3),
        }
    return {
        "worker_id": settings.worker_id,
        "timestamp": round(services.wall_clock(), 3),
        "state": reported_state(services),
        "slots_total": settings.slots,
        "slots_busy": stats.slots_busy if stats else 0,
        "queue_depth": stats.queue_depth if stats else 0,
        "model_ref": settings.model_ref or services.model_id,
        "device": settings.device,
        "vram_used_bytes": vitals.vram_used_bytes,
        "vram_total_bytes": vitals.vram_total_bytes,
        "tokens_generated_total": model_stats.tokens_generated if model_stats else 0,
        "requests_total": pool.requests_total if pool else 0,
        "uptime_s": round(trio.current_time() - services.started_at, 3),
        "last_error": last_error,
        "load_progress": round(services.loading.snapshot().progress, 3),
        "hive": vitals.hive,
        "hive_last_success": vitals.hive_last_success,
    }


def gone_payload(services: Services, reason: str) -> Payload:
    return {
        "worker_id": services.settings.worker_id,
        "timestamp": round(services.wall_clock(), 3),
        "reason": reason,
        "uptime_s": round(trio.current_time() - services.started_at, 3),
    }


class WorkerReports:
    """The HeartbeatActor's `Reports`: payloads built at the moment of sending."""

    def __init__(self, services: Services, binds: list[str]) -> None:
        self._services = services
        self._binds = binds

    def ready(self) -> Payload:
        return ready_payload(self._services, self._binds)

    def heartbeat(self) -> Payload:
        return heartbeat_payload(self._services)

    def gone(self, reason: str) -> Payload:
        return gone_payload(self._services, reason)


def metrics_snapshot(services: Services) -> Snapshot:
    """What the Prometheus gauges show, read from the actors."""
    stats = services.scheduler.statistics() if services.scheduler else None
    model = services.model.statistics() if services.model else None
    n_ctx = services.model.info.n_ctx if services.model else 0
    return Snapshot(
        running=stats.slots_busy if stats else 0,
        waiting=stats.queue_depth if stats else 0,
        slots_busy=stats.slots_busy if stats else 0,
        slots_total=services.settings.slots,
        kv_usage=(model.kv_tokens / n_ctx) if model and n_ctx else 0.0,
    )

"""What the worker tells the hive (and GET /heartbeat): the ready, heartbeat and gone payloads;
and what it tells rbee's queen (and GET /info): the worker contract's WorkerInfo.

Every field is listed in docs/HIVE_PROTOCOL.md.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from llm_worker_rbee import __version__
from llm_worker_rbee.config import Settings
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.metrics import Snapshot
from llm_worker_rbee.urls import unspecified_host

Payload = dict[str, Any]


# rbee's worker contract: WorkerInfo.implementation names the kind of worker.
IMPLEMENTATION = "llm-worker-rbee"


def advertised_url(
    settings: Settings, binds: list[str], hostname: Callable[[], str] = socket.gethostname
) -> str | None:
    """The URL others reach this worker at: `--advertise-url`, else the first bound URL
    with an unspecified host (0.0.0.0, ::), which no one can connect to, replaced by this
    machine's host name."""
    if settings.advertise_url is not None:
        return settings.advertise_url
    if not binds:
        return None
    parts = urlsplit(binds[0])
    if not unspecified_host(parts.hostname or ""):
        return binds[0]
    netloc = hostname() if parts.port is None else f"{hostname()}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def listening_port(services: Services) -> int:
    """The port the worker listens on: the bound one (the actual one for `--port 0`)."""
    port = urlsplit(services.binds[0]).port if services.binds else None
    return port if port is not None else services.settings.port


def ready_payload(services: Services, binds: list[str]) -> Payload:
    settings = services.settings
    return {
        "worker_id": settings.worker_id,
        "url": advertised_url(settings, binds),
        "model_ref": settings.model_ref or services.model_id,
        "backend": settings.backend,
        "device": services.device.spec,
        "device_uuid": services.device.uuid,
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
        "device": services.device.spec,
        "device_uuid": services.device.uuid,
        "vram_used_bytes": vitals.vram_used_bytes,
        "vram_total_bytes": vitals.vram_total_bytes,
        "vram_process_bytes": vitals.vram_process_bytes,
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


def worker_status(services: Services) -> str:
    """rbee's `OperationalStatus`: starting (and loading), ready, busy (every slot taken),
    stopping (draining), stopped. rbee has no `degraded`: a degraded worker still serves,
    so it is `ready` or `busy` here."""
    state = services.lifecycle.state
    if state in (WorkerState.STARTING, WorkerState.LOADING):
        return "starting"
    if state is WorkerState.DRAINING:
        return "stopping"
    if state is WorkerState.STOPPED:
        return "stopped"
    stats = services.scheduler.statistics() if services.scheduler else None
    busy = stats is not None and stats.slots_busy == stats.slots_total
    return "busy" if busy else "ready"


def worker_info_payload(services: Services) -> Payload:
    """rbee's `WorkerInfo` (worker-contract), for the queen's heartbeat and GET /info."""
    return {
        "id": services.settings.worker_id,
        "model_id": services.model_id,
        "device": services.device.rbee_name(),
        "port": listening_port(services),
        "status": worker_status(services),
        "implementation": IMPLEMENTATION,
        "version": __version__,
    }


def worker_heartbeat_payload(services: Services) -> Payload:
    """rbee's `WorkerHeartbeat`: the WorkerInfo and an RFC 3339 UTC timestamp (chrono's
    `DateTime<Utc>` reads it)."""
    return {
        "worker": worker_info_payload(services),
        "timestamp": rfc3339(services.wall_clock()),
    }


def rfc3339(unix_seconds: float) -> str:
    """`2026-01-01T00:00:30.000Z`: UTC, milliseconds, `Z` as chrono writes it."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        drafted=model.drafted if model else 0,
        accepted=model.accepted if model else 0,
    )

"""Wiring: the actors started in dependency order under one root nursery."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import trio
from quart_trio import QuartTrio

from llm_worker_rbee.actors.heartbeat import GOODBYE_TIMEOUT_S, HeartbeatActor
from llm_worker_rbee.actors.jobs import JobBoard
from llm_worker_rbee.actors.lifecycle import LifecycleActor, LifecycleHandle
from llm_worker_rbee.actors.model import ModelActor, ModelHandle
from llm_worker_rbee.actors.queen_heartbeat import QueenHeartbeatActor
from llm_worker_rbee.actors.scheduler import SlotScheduler
from llm_worker_rbee.actors.session import SessionPool
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import Engine, LoadCancelled, ModelLoadError
from llm_worker_rbee.engine.loading import LoadProgress
from llm_worker_rbee.hive.client import HiveClient
from llm_worker_rbee.hive.connect import hive_client_for, queen_client_for
from llm_worker_rbee.hive.queen_client import QueenClient
from llm_worker_rbee.hive.vitals import VramReader
from llm_worker_rbee.http.app import create_app
from llm_worker_rbee.http.server import serve_http
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.page_status import keep_history
from llm_worker_rbee.http.system.status import (
    WorkerReports,
    advertised_url,
    metrics_snapshot,
    worker_heartbeat_payload,
)
from llm_worker_rbee.inspection.gpu import AskedDevice
from llm_worker_rbee.inspection.model_report import ModelFile
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.metrics import WorkerMetrics
from llm_worker_rbee.pipeline.runner import StepRunner
from llm_worker_rbee.tracing import Tracer, fan_out, no_trace

log = logging.getLogger(__name__)

# The model could not be served: the exit code of a refusal before loading (preflight) and
# of a load that failed or ran past --load-timeout.
LOAD_FAILED_EXIT = 3


class Server(Protocol):
    """Serves the app until `shutdown_trigger` returns; reports its URLs when listening."""

    async def __call__(
        self,
        app: QuartTrio,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[list[str]],
    ) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """What the worker takes from its surroundings; the scenario harness swaps these."""

    runner: StepRunner
    server: Server | None = None  # None: hypercorn on settings.host:settings.port
    handle_signals: bool = True
    tracer: Tracer = no_trace
    wall_clock: Callable[[], float] = time.time
    new_job_id: Callable[[], str] = field(default=lambda: f"job-{uuid.uuid4().hex}")
    # None: HTTP or WebSocket by --hive-url's scheme (no hive without one); scenarios script it.
    hive_client: HiveClient | None = None
    # Numbers in [0, 1) for the hive backoff's jitter; scenarios make them fixed.
    jitter: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    # (used, total) bytes of the worker's GPU for the heartbeat; None on the CPU.
    vram: VramReader | None = None
    # Called once the worker listens, before the model loads (the scenario harness starts
    # its clients then, so they can watch the load).
    on_listening: Callable[[Services], None] = field(default=lambda services: None)
    # The device the operator asked for and the GPU it is, for the reports; None: the
    # settings' --device, on the CPU.
    device: AskedDevice | None = None
    # None: HTTP to --queen-url (no queen heartbeat without one); scenarios script it.
    queen_client: QueenClient | None = None
    # What the served file says about the model, for the status page; None: not read.
    model_file: ModelFile | None = None
    # Called with exit code 0 once a stop has finished every response and said every
    # goodbye: the process may end there (the command line's `exit_now`), leaving the
    # engine's free (after its step in flight) and the interpreter's teardown to the OS.
    # None: the whole way down, the engine unloaded (tests, scenarios).
    exit_when_served: Callable[[int], None] | None = None


async def run_worker(
    settings: Settings,
    *,
    model_id: str,
    engine_factory: Callable[[], Engine],
    runtime: Runtime,
    progress: LoadProgress | None = None,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Runs the worker until it is told to stop. Returns the process exit code: 0, or
    LOAD_FAILED_EXIT when the model did not load (the error is in `progress`).

    Start order: lifecycle (signals), HTTP (answers 503 while loading), heartbeat (waits for
    `ready` before it registers), model, scheduler, sessions; then `ready`. Stop order is the
    reverse, after the drain. `progress` is what `engine_factory` reports its load to.
    """
    progress = progress or LoadProgress()
    metrics = WorkerMetrics()
    tracer = fan_out(runtime.tracer, metrics.observe)
    server = runtime.server or partial(serve_http, host=settings.host, port=settings.port)
    async with trio.open_nursery() as root:
        lifecycle_actor = LifecycleActor(
            drain_timeout=settings.drain_timeout,
            handle_signals=runtime.handle_signals,
            tracer=tracer,
        )
        lifecycle = await root.start(lifecycle_actor.run)
        services = Services(
            settings=settings,
            lifecycle=lifecycle,
            model_id=model_id,
            wall_clock=runtime.wall_clock,
            new_job_id=runtime.new_job_id,
            metrics=metrics,
            loading=progress,
            device=runtime.device or AskedDevice(settings.device),
            model_file=runtime.model_file,
        )
        metrics.snapshot = partial(metrics_snapshot, services)
        http_done = trio.Event()

        async def http(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await server(
                    create_app(services),
                    shutdown_trigger=lifecycle.wait_stopped,
                    task_status=task_status,
                )
            finally:
                http_done.set()

        binds = await root.start(http)
        services.binds = binds
        log.info("listening on %s", " ".join(binds))
        await lifecycle.loading()
        runtime.on_listening(services)
        # Before the model: a worker whose model does not load still says goodbye.
        heartbeat_actor = HeartbeatActor(
            client=runtime.hive_client or hive_client_for(settings),
            interval=settings.heartbeat_interval,
            lifecycle=lifecycle,
            reports=WorkerReports(services, binds),
            cancel_job=services.cancel_job,
            vitals=services.vitals,
            wall_clock=runtime.wall_clock,
            jitter=runtime.jitter,
            vram=runtime.vram,
            worker_id=settings.worker_id,
            tracer=tracer,
        )
        heartbeat = await root.start(heartbeat_actor.run)
        queen = _queen_actor(settings, runtime, services, lifecycle, tracer)
        if queen is not None:
            await root.start(queen.run)
        model_actor = ModelActor(engine_factory, runtime.runner, tracer=tracer)
        progress.begin(settings.load_timeout)
        model = await _load_model(root, model_actor, progress, lifecycle)
        if model is not None:
            scheduler = await root.start(
                SlotScheduler(
                    settings.slots,
                    settings.max_queue,
                    tracer=tracer,
                    chooser=model.choose_slot,
                    pool=model.info.kv_pool,
                    max_wait_s=settings.queue_wait_s,
                    pace=lambda: model.statistics().token_s,
                ).run
            )
            sessions = await root.start(SessionPool(model, scheduler, tracer=tracer).run)
            jobs = await root.start(JobBoard(settings.job_pickup_timeout).run)
            services.model, services.scheduler, services.sessions = model, scheduler, sessions
            services.jobs = jobs
            await lifecycle.ready(sessions)
            progress.succeed()
            root.start_soon(keep_history, services)  # the status page's charts
            log.info(
                "ready: %s, %d slots, %d context (%s); status page: %s/ui",
                model_id,
                settings.slots,
                model.info.n_ctx,
                "per-slot KV, batch-invariant" if model.info.kv_pool is None else "shared KV pool",
                advertised_url(settings, binds),
            )
            task_status.started(services)
        await http_done.wait()
        # The goodbye needs the hive connection, which the root's cancellation would close.
        with trio.move_on_after(GOODBYE_TIMEOUT_S + 1):
            await heartbeat.wait_goodbye()
            if queen is not None:  # its last heartbeat, said at the same time
                await queen.wait_done()
        if runtime.exit_when_served is not None and not lifecycle.failed:
            # Nothing a client or the hive needs is left (#23: rbee's hive kills 2 s after
            # SIGTERM, and the rest of the way down took 0.3-0.5 s after the drain).
            log.info("stopped (%s); exiting without unloading the model", lifecycle.state.value)
            runtime.exit_when_served(0)
        root.cancel_scope.cancel()
    log.info("stopped (%s)", lifecycle.state.value)
    return LOAD_FAILED_EXIT if lifecycle.failed else 0


def _queen_actor(
    settings: Settings,
    runtime: Runtime,
    services: Services,
    lifecycle: LifecycleHandle,
    tracer: Tracer,
) -> QueenHeartbeatActor | None:
    """rbee's worker-contract heartbeat, with --queen-url (or a scripted queen)."""
    client = runtime.queen_client or queen_client_for(settings)
    if client is None:
        return None
    return QueenHeartbeatActor(
        client=client,
        lifecycle=lifecycle,
        payload=partial(worker_heartbeat_payload, services),
        tracer=tracer,
    )


async def _load_model(
    root: trio.Nursery,
    actor: ModelActor,
    progress: LoadProgress,
    lifecycle: LifecycleHandle,
) -> ModelHandle | None:
    """Starts the ModelActor, which loads the engine; None if the load failed (the worker
    is then stopped as failed) or was aborted because the worker is stopping."""
    async with trio.open_nursery() as watch:
        watch.start_soon(_abort_load_when_stopping, lifecycle, progress)
        try:
            handle: ModelHandle = await root.start(actor.run)
            return handle
        except ModelLoadError as exc:
            error = exc
        except Exception as exc:  # an OS error or a bug while loading: still one clear line
            log.exception("loading the model raised")
            error = ModelLoadError(f"{type(exc).__name__}: {exc}")
        finally:
            watch.cancel_scope.cancel()
    progress.fail(error)
    if isinstance(error, LoadCancelled):
        log.info("model load aborted: the worker is stopping")
    else:
        await lifecycle.fail(f"load failed: {error}")
    return None


async def _abort_load_when_stopping(lifecycle: LifecycleHandle, progress: LoadProgress) -> None:
    """A drain or stop during the load aborts it (at llama.cpp's next progress report)
    rather than waiting for a model nobody will use."""
    await lifecycle.wait_state_change(WorkerState.LOADING)
    progress.cancel()

"""The whole worker in-process on the fake engine: its ASGI app, called without sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

import trio

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.testing.asgi import ASGIApp, Exchange, asgi_request
from llm_worker_rbee.tracing import Tracer, no_trace
from llm_worker_rbee.worker import Runtime, run_worker


class InProcessServer:
    """Stands in for hypercorn: hands the app over, returns when told to stop."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(
        self, app: Any, *, shutdown_trigger: Any, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        self.app = app
        task_status.started(["http://in-process"])
        await shutdown_trigger()


@dataclass
class InProcessWorker:
    app: ASGIApp
    services: Services
    engine: FakeEngine

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Exchange:
        raw = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        return await asgi_request(
            self.app,
            method,
            path,
            body=raw,
            headers={"content-type": "application/json", **(headers or {})},
        )


@asynccontextmanager
async def inprocess_worker(
    settings: Settings | None = None,
    script: FakeScript | None = None,
    *,
    tracer: Tracer = no_trace,
    epoch: float = 1_767_225_600.0,
) -> AsyncIterator[InProcessWorker]:
    """Starts the worker (all actors, the real app) on the fake engine in the current trio
    run; under a MockClock everything is virtual time."""
    settings = settings or Settings(worker_id="in-process")
    script = script or FakeScript()
    script.n_ctx, script.n_slots = settings.ctx_tokens, settings.slots
    script.batch_invariant = settings.batch_invariant
    engine = FakeEngine(script)
    server = InProcessServer()
    ids = count(1)
    runtime = Runtime(
        runner=VirtualTimeStepRunner(lambda: script.step_latency),
        server=server,
        handle_signals=False,
        tracer=tracer,
        wall_clock=lambda: epoch + trio.current_time(),
        new_job_id=lambda: f"job-{next(ids)}",
    )
    async with trio.open_nursery() as nursery:

        async def worker(*, task_status: trio.TaskStatus[Services]) -> None:
            await run_worker(
                settings,
                model_id="fake-model",
                engine_factory=lambda: engine,
                runtime=runtime,
                task_status=task_status,
            )

        services: Services = await nursery.start(worker)
        assert server.app is not None
        yield InProcessWorker(server.app, services, engine)
        nursery.cancel_scope.cancel()

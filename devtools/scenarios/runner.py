"""Runs one scenario: the worker (`run_worker`, in-process server, fake engine in virtual
time) with the scripted hive and queen, the file's timeline of clients, operator actions
and state looks in a fixed order, every message between actors recorded; then the checks.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import trio
import trio.testing

from devtools.scenarios.checks import check
from devtools.scenarios.observed import Observed, streamed_tokens
from devtools.scenarios.scheduling import deterministic_trio
from devtools.scenarios.spec import ActionSpec, RequestSpec, Scenario, StateExpect
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.engine.loading import LoadProgress
from llm_worker_rbee.hive.scripted import (
    QUEEN_LOGGER,
    HiveScript,
    ScriptedHive,
    ScriptedQueen,
    captured_log,
)
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.status import reported_state
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.testing.asgi import ASGIApp, asgi_request
from llm_worker_rbee.testing.inprocess import InProcessServer
from llm_worker_rbee.testing.virtual_load import VirtualTimeLoader
from llm_worker_rbee.tracing import TraceRecorder
from llm_worker_rbee.worker import Runtime, run_worker

# The wall clock a scenario's worker sees at virtual time 0 (2026-01-01T00:00:00Z), so
# absolute deadlines in scenario files are reproducible.
EPOCH = 1_767_225_600.0


@dataclass
class Outcome:
    name: str
    failures: list[str]
    trace: list[str]
    virtual_s: float
    wall_ms: float
    requests: int

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def trace_hash(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientAction:
    """A scripted client or operator action, as recorded in the trace."""

    who: str
    what: str


def run_scenario(path: Path) -> Outcome:
    """Runs one scenario file in virtual time and checks its expectations."""
    scenario = Scenario.load(path)
    recorder = TraceRecorder()
    observed = Observed()
    started = time.perf_counter()
    clock = trio.testing.MockClock(autojump_threshold=0)
    with deterministic_trio(), captured_log() as hive_log, captured_log(QUEEN_LOGGER) as queen_log:
        observed.hive_log, observed.queen_log = hive_log, queen_log
        trio.run(_drive_until_limit, scenario, recorder, observed, clock=clock)
    virtual = clock.current_time()
    failures = check(scenario, observed)
    return Outcome(
        name=path.name,
        failures=failures,
        trace=recorder.lines,
        virtual_s=virtual,
        wall_ms=(time.perf_counter() - started) * 1000,
        requests=len(scenario.request),
    )


def _script(scenario: Scenario, settings: Settings) -> FakeScript:
    spec = scenario.engine
    return FakeScript(
        reply=[_piece(p) for p in spec.reply] * spec.repeat,
        replies={k: [_piece(p) for p in v] for k, v in spec.replies.items()},
        step_latency=spec.step_latency,
        prefill_chunk=spec.prefill_chunk,
        fail_at_steps=frozenset(spec.fail_at_steps),
        oom_at_steps=frozenset(spec.oom_at_steps),
        load_error=spec.load_error,
        n_ctx=settings.ctx_tokens,
        n_slots=settings.slots,
        batch_invariant=settings.batch_invariant,
    )


def _piece(piece: str) -> str | bytes:
    return bytes.fromhex(piece[4:]) if piece.startswith("hex:") else piece


async def _drive_until_limit(
    scenario: Scenario, recorder: TraceRecorder, observed: Observed
) -> None:
    with trio.move_on_at(scenario.time_limit):
        await _drive(scenario, recorder, observed)
        return
    observed.gave_up_at = trio.current_time()


async def _drive(scenario: Scenario, recorder: TraceRecorder, observed: Observed) -> None:
    hive = observed.hive = ScriptedHive(scenario.hive) if scenario.hive is not None else None
    defaults = {"worker_id": "scenario-worker", **({"hive_url": hive.url} if hive else {})}
    queen = observed.queen = ScriptedQueen(scenario.queen) if scenario.queen is not None else None
    if queen is not None:
        defaults["queen_url"] = queen.url
    settings = Settings(**{**defaults, **scenario.settings})
    script = _script(scenario, settings)
    engine = FakeEngine(script)
    server = InProcessServer()
    ids = count(1)
    progress = LoadProgress(clock=trio.current_time)
    listening = trio.Event()
    started: list[Services] = []

    def on_listening(services: Services) -> None:
        started.append(services)
        listening.set()

    runtime = Runtime(
        runner=VirtualTimeLoader(
            VirtualTimeStepRunner(
                lambda: script.step_latency,
                lag=scenario.engine.delivery_lag,
                steps_ahead=scenario.engine.steps_ahead,
            ),
            progress,
            scenario.engine.load_time,
        ),
        server=server,
        handle_signals=False,
        tracer=recorder,
        wall_clock=lambda: EPOCH + trio.current_time(),
        new_job_id=lambda: f"job-{next(ids)}",
        hive_client=hive,
        queen_client=queen,
        jitter=(scenario.hive or HiveScript()).jitter_source(),
        on_listening=on_listening,
    )

    async with trio.open_nursery() as root:

        async def worker() -> None:
            observed.exit_code = await run_worker(
                settings,
                model_id="fake-model",
                engine_factory=lambda: engine.load(progress),
                runtime=runtime,
                progress=progress,
            )
            observed.stopped_at = trio.current_time()

        # The timeline starts once the worker listens: with a `load_time`, clients see the
        # load; without one the model is in before anything at t=0 runs.
        root.start_soon(worker)
        await listening.wait()
        services = started[0]
        assert server.app is not None
        app = server.app
        # One timeline, in (time, kind, file) order: requests, then actions, then state checks.
        # Each starts once everything before it has run as far as it can, so things that
        # happen "at the same time" happen in the file's order on every run and in every
        # process, instead of in whatever order trio's scheduler picks.
        timeline_items: list[tuple[float, int, int, Any]] = [
            *((r.at, 0, i, r) for i, r in enumerate(scenario.request)),
            *((a.at, 1, i, a) for i, a in enumerate(scenario.action)),
            *((c.at, 2, i, c) for i, c in enumerate(scenario.expect.states)),
        ]
        async with trio.open_nursery() as timeline:
            for at, kind, _, item in sorted(timeline_items, key=lambda t: t[:3]):
                await trio.sleep_until(at)
                await trio.testing.wait_all_tasks_blocked()
                if kind == 0:
                    timeline.start_soon(_client, app, item, recorder, observed)
                elif kind == 1:
                    timeline.start_soon(_act, app, services, item, recorder, observed)
                else:
                    timeline.start_soon(_look, app, services, engine, item, observed)
        if scenario.end_at is not None:
            await trio.sleep_until(scenario.end_at)
        if observed.stopped_at is None:
            recorder("harness", ClientAction("harness", "SIGTERM at the end"))
            services.lifecycle.signal(signal.SIGTERM)


async def _client(
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: Observed
) -> None:
    if spec.api == "loading":
        await _watch_loading(app, spec, recorder, observed)
        return
    if spec.api in ("jobs", "queen", "stream"):
        await _two_calls(app, spec, recorder, observed)
        return
    path = {
        "inference": "/v1/inference",
        "completions": "/v1/completions",
        "chat": "/v1/chat/completions",
    }[spec.api]
    body: dict[str, Any] = dict(spec.body)
    if spec.api == "inference" and spec.send_job_id:
        body.setdefault("job_id", spec.id)
    if spec.api != "inference":
        body.setdefault("stream", spec.stream)
    raw = spec.raw_body.encode() if spec.raw_body is not None else json.dumps(body).encode()
    headers = {"content-type": "application/json", **spec.headers}
    if spec.api == "inference" and spec.stream:  # an SSE client says so (else: two calls)
        headers.setdefault("accept", "text/event-stream")
    limit = spec.leave_after_tokens
    recorder(f"client:{spec.id}", ClientAction(spec.id, f"POST {path}"))
    exchange = await asgi_request(
        app,
        "POST",
        path,
        body=raw,
        headers=headers,
        leave_at=spec.leave_at,
        leave_when=(lambda ex: streamed_tokens(ex) >= limit) if limit is not None else None,
    )
    observed.exchanges[spec.id] = exchange
    if exchange.disconnected_at is not None:
        recorder(f"client:{spec.id}", ClientAction(spec.id, "left"))
    recorder(f"client:{spec.id}", ClientAction(spec.id, f"done {exchange.status}"))


async def _two_calls(
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: Observed
) -> None:
    """rbee's callers: POST a job (unless `stream`), then read `GET {sse_url}` once."""
    who = f"client:{spec.id}"
    if spec.api == "stream":
        url = f"/v1/jobs/{spec.job}/stream"
    else:
        body = dict(spec.body)
        path = "/v1/jobs" if spec.api == "jobs" else "/v1/inference"
        if spec.api == "jobs":
            body.setdefault("operation", "infer")
        headers = {"content-type": "application/json", "accept": "*/*", **spec.headers}
        if spec.send_job_id:
            headers.setdefault("x-request-id", spec.id)
        raw = spec.raw_body.encode() if spec.raw_body is not None else json.dumps(body).encode()
        recorder(who, ClientAction(spec.id, f"POST {path}"))
        posted = await asgi_request(app, "POST", path, body=raw, headers=headers)
        observed.posts[spec.id] = posted
        observed.exchanges[spec.id] = posted
        recorder(who, ClientAction(spec.id, f"posted {posted.status}"))
        if posted.status != 200 or not spec.read:
            return
        url = posted.json()["sse_url"]
        if spec.read_at is not None:
            await trio.sleep_until(spec.read_at)
    limit = spec.leave_after_tokens
    recorder(who, ClientAction(spec.id, f"GET {url}"))
    exchange = await asgi_request(
        app,
        "GET",
        url,
        leave_at=spec.leave_at,
        leave_when=(lambda ex: streamed_tokens(ex) >= limit) if limit is not None else None,
    )
    observed.exchanges[spec.id] = exchange
    if exchange.disconnected_at is not None:
        recorder(who, ClientAction(spec.id, "left"))
    recorder(who, ClientAction(spec.id, f"done {exchange.status}"))


async def _watch_loading(
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: Observed
) -> None:
    recorder(f"client:{spec.id}", ClientAction(spec.id, "GET /v1/loading/progress"))
    exchange = await asgi_request(app, "GET", "/v1/loading/progress", leave_at=spec.leave_at)
    observed.exchanges[spec.id] = exchange
    recorder(f"client:{spec.id}", ClientAction(spec.id, f"done {exchange.status}"))


async def _act(
    app: ASGIApp,
    services: Services,
    action: ActionSpec,
    recorder: TraceRecorder,
    observed: Observed,
) -> None:
    recorder("harness", ClientAction("operator", f"{action.do} {action.job or ''}".strip()))
    if action.do == "cancel":
        exchange = await asgi_request(app, "DELETE", f"/v1/inference/{action.job}")
        assert exchange.status is not None and action.job is not None
        observed.cancel_status[action.job] = exchange.status
    else:
        services.lifecycle.signal(signal.SIGTERM if action.do == "sigterm" else signal.SIGINT)


async def _look(
    app: ASGIApp, services: Services, engine: FakeEngine, check: StateExpect, observed: Observed
) -> None:
    # Whatever else happens at this instant happens first.
    await trio.testing.wait_all_tasks_blocked()
    stats = services.scheduler.statistics() if services.scheduler else None
    health = await asgi_request(app, "GET", "/health")
    ready = await asgi_request(app, "GET", "/v1/ready")
    seen = {
        "slots_busy": stats.slots_busy if stats else None,
        "queue_depth": stats.queue_depth if stats else None,
        "engine_active": len(engine.active),
        "engine_steps": engine.steps,
        "cells_reserved": stats.cells_reserved if stats else None,
        "health": health.status,
        "state": services.lifecycle.state.value,
        "ready": ready.status,
        "load_stage": ready.json()["stage"],
        "load_progress": ready.json()["progress"],
        "heartbeat_state": reported_state(services),
    }
    observed.states.append((check, seen))

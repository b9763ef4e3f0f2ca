"""The scenario harness: the real worker (actors and HTTP app) on the scripted fake engine,
driven by scripted clients in trio's virtual time, every message recorded.

A scenario file (TOML, see docs/SCENARIOS.md) gives the settings, the engine's script, a
timeline of requests and actions, and what must be true afterwards.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import signal
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal

import trio
import trio.testing
from pydantic import BaseModel, ConfigDict, Field

from llm_worker_rbee.actors.pump import STEPS_AHEAD
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.engine.loading import LoadProgress
from llm_worker_rbee.engine.runner import VirtualTimeStepRunner
from llm_worker_rbee.hive.scripted import (
    QUEEN_LOGGER,
    HiveExpect,
    HiveScript,
    QueenExpect,
    QueenScript,
    ScriptedHive,
    ScriptedQueen,
    captured_log,
    check_hive,
    check_queen,
)
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.status import reported_state
from llm_worker_rbee.testing.asgi import ASGIApp, Exchange, SseEvent, asgi_request
from llm_worker_rbee.testing.inprocess import InProcessServer
from llm_worker_rbee.testing.virtual_load import VirtualTimeLoader
from llm_worker_rbee.tracing import TraceRecorder
from llm_worker_rbee.worker import Runtime, run_worker

# The wall clock a scenario's worker sees at virtual time 0 (2026-01-01T00:00:00Z), so
# absolute deadlines in scenario files are reproducible.
EPOCH = 1_767_225_600.0
SCHEDULER_SEED = 0x5EED


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineSpec(_Strict):
    step_latency: float = 0.125
    load_time: float = 0.0
    # Pieces of the reply; "hex:c3a9" is raw bytes (for split UTF-8).
    reply: list[str] = ["Hello", ",", " world", "!"]
    repeat: int = Field(default=1, ge=1)
    replies: dict[str, list[str]] = {}
    prefill_chunk: int = Field(default=512, ge=1)
    fail_at_steps: list[int] = []
    oom_at_steps: list[int] = []
    # Virtual seconds from a step's end until the event loop takes its outputs (busy
    # elsewhere), so the engine runs ahead of the sessions as it does on its thread...
    delivery_lag: float = Field(default=0.0, ge=0.0)
    # ...by at most this many steps (the pump's window; production's STEPS_AHEAD).
    steps_ahead: int = Field(default=STEPS_AHEAD, ge=1)
    # The load fails with this message once the weights are in (after `load_time`).
    load_error: str | None = None


class RequestSpec(_Strict):
    id: str
    at: float = 0.0
    # loading: GET /v1/loading/progress (the other fields but `leave_at` do not apply);
    # jobs: POST /v1/jobs (rbee's job-client), then GET its stream; queen: POST
    # /v1/inference as rbee's queen does (no stream, Accept */*), then GET its `sse_url`;
    # stream: only GET /v1/jobs/{job}/stream (a second reader, or a late one).
    api: Literal["inference", "completions", "chat", "loading", "jobs", "queen", "stream"] = (
        "inference"
    )
    stream: bool = True
    body: dict[str, Any] = {}
    headers: dict[str, str] = {}
    # rbee requests send `id` as their job_id unless this is false.
    send_job_id: bool = True
    raw_body: str | None = None
    leave_at: float | None = None
    leave_after_tokens: int | None = None
    # jobs / queen: when to open the stream (virtual seconds; default at once), or never.
    read_at: float | None = None
    read: bool = True
    # stream: the job id whose stream to open.
    job: str | None = None


class ActionSpec(_Strict):
    at: float
    do: Literal["sigterm", "sigint", "cancel"]
    job: str | None = None


class RequestExpect(_Strict):
    status: int | None = None
    stop_reason: str | None = None
    finish_reason: str | None = None
    tokens: int | None = None
    streamed_tokens: int | None = None
    text: str | None = None
    error_code: str | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    queue_position: int | Literal["none"] | None = None
    job_id: str | None = None
    retry_after: str | None = None
    min_pings: int | None = None
    # Every event of a /v1/loading/progress stream, as "T EVENT STAGE PROGRESS".
    load_events: list[str] | None = None
    # jobs / queen: the status of the POST that created the job.
    posted_status: int | None = None
    # The last data line that is not JSON: "[DONE]", "[CANCELLED]", "[ERROR] ...".
    marker: str | None = None
    # Every line of the stream was a `data:` frame (no `event:` lines, no comments).
    data_only: bool | None = None
    # OpenAI requests with several choices: each choice's text, by index (a whole body's
    # `choices[i]` must carry index i), and, streamed, when each choice's finish arrived.
    choices: list[str] | None = None
    choice_ends: list[float] | None = None


class StateExpect(_Strict):
    at: float
    slots_busy: int | None = None
    queue_depth: int | None = None
    engine_active: int | None = None
    engine_steps: int | None = None  # steps the engine has run so far
    cells_reserved: int | None = None  # KV cells the running requests reserved (shared pool)
    health: int | None = None
    state: str | None = None
    ready: int | None = None  # status of GET /v1/ready
    load_stage: str | None = None  # its `stage`
    load_progress: float | None = None  # its `progress`
    heartbeat_state: str | None = None  # the heartbeat payload's `state`


class Expect(_Strict):
    requests: dict[str, RequestExpect] = {}
    states: list[StateExpect] = []
    # job id -> HTTP status of its DELETE /v1/inference/{job} (the [[action]] "cancel")
    cancels: dict[str, int] = {}
    exit_code: int | None = 0
    stopped_at: float | None = None
    # What the scripted hive received and when, and what the HeartbeatActor logged.
    hive: HiveExpect | None = None
    # What the scripted queen received and when, and what the QueenHeartbeatActor logged.
    queen: QueenExpect | None = None


class Scenario(_Strict):
    description: str
    covers: list[str] = []
    settings: dict[str, Any] = {}
    engine: EngineSpec = EngineSpec()
    request: list[RequestSpec] = []
    action: list[ActionSpec] = []
    expect: Expect = Expect()
    # A scripted hive (hive/scripted.py); without one the worker has no --hive-url.
    hive: HiveScript | None = None
    # A scripted rbee queen (hive/scripted.py); without one the worker has no --queen-url.
    queen: QueenScript | None = None
    # When the harness sends SIGTERM if nothing stopped the worker: default, once every
    # request and action is done.
    end_at: float | None = None
    # Virtual seconds after which the harness gives up on a scenario that does not finish.
    time_limit: float = 600.0

    @classmethod
    def load(cls, path: Path) -> Scenario:
        with path.open("rb") as file:
            return cls.model_validate(tomllib.load(file))


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


@dataclass
class _Observed:
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    posts: dict[str, Exchange] = field(default_factory=dict)  # jobs / queen: the POST
    cancel_status: dict[str, int] = field(default_factory=dict)
    states: list[tuple[StateExpect, dict[str, Any]]] = field(default_factory=list)
    exit_code: int | None = None
    stopped_at: float | None = None
    gave_up_at: float | None = None
    hive: ScriptedHive | None = None
    hive_log: list[str] = field(default_factory=list)
    queen: ScriptedQueen | None = None
    queen_log: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClientAction:
    """A scripted client or operator action, as recorded in the trace."""

    who: str
    what: str


def run_scenario(path: Path) -> Outcome:
    """Runs one scenario file in virtual time and checks its expectations."""
    scenario = Scenario.load(path)
    recorder = TraceRecorder()
    observed = _Observed()
    started = time.perf_counter()
    clock = trio.testing.MockClock(autojump_threshold=0)
    with deterministic_trio(), captured_log() as hive_log, captured_log(QUEEN_LOGGER) as queen_log:
        observed.hive_log, observed.queen_log = hive_log, queen_log
        trio.run(_drive_until_limit, scenario, recorder, observed, clock=clock)
    virtual = clock.current_time()
    failures = _check(scenario, observed)
    return Outcome(
        name=path.name,
        failures=failures,
        trace=recorder.lines,
        virtual_s=virtual,
        wall_ms=(time.perf_counter() - started) * 1000,
        requests=len(scenario.request),
    )


@contextmanager
def deterministic_trio() -> Iterator[None]:
    """Makes trio's scheduling repeatable, so a scenario's trace is the same on every run.

    Trio shuffles ready tasks on purpose (seeded here), and orders timers that expire at the
    same instant by `id()` of their cancel scope, i.e. by memory address; that tie-breaker
    is replaced by registration order. Both are trio internals (checked on trio 0.35): if
    they move, this fails loudly rather than making scenarios flaky.
    """
    run_module = trio._core._run
    deadlines = run_module.Deadlines
    original_add = deadlines.add
    order = count()

    def add(self: Any, deadline: float, cancel_scope: Any) -> None:
        heapq.heappush(self._heap, (deadline, next(order), cancel_scope))
        self._active += 1

    run_module._r.seed(SCHEDULER_SEED)
    deadlines.add = add  # type: ignore[method-assign]
    try:
        yield
    finally:
        deadlines.add = original_add  # type: ignore[method-assign]


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
    scenario: Scenario, recorder: TraceRecorder, observed: _Observed
) -> None:
    with trio.move_on_at(scenario.time_limit):
        await _drive(scenario, recorder, observed)
        return
    observed.gave_up_at = trio.current_time()


async def _drive(scenario: Scenario, recorder: TraceRecorder, observed: _Observed) -> None:
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
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: _Observed
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
        leave_when=(lambda ex: _streamed_tokens(ex) >= limit) if limit is not None else None,
    )
    observed.exchanges[spec.id] = exchange
    if exchange.disconnected_at is not None:
        recorder(f"client:{spec.id}", ClientAction(spec.id, "left"))
    recorder(f"client:{spec.id}", ClientAction(spec.id, f"done {exchange.status}"))


async def _two_calls(
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: _Observed
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
        leave_when=(lambda ex: _streamed_tokens(ex) >= limit) if limit is not None else None,
    )
    observed.exchanges[spec.id] = exchange
    if exchange.disconnected_at is not None:
        recorder(who, ClientAction(spec.id, "left"))
    recorder(who, ClientAction(spec.id, f"done {exchange.status}"))


async def _watch_loading(
    app: ASGIApp, spec: RequestSpec, recorder: TraceRecorder, observed: _Observed
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
    observed: _Observed,
) -> None:
    recorder("harness", ClientAction("operator", f"{action.do} {action.job or ''}".strip()))
    if action.do == "cancel":
        exchange = await asgi_request(app, "DELETE", f"/v1/inference/{action.job}")
        assert exchange.status is not None and action.job is not None
        observed.cancel_status[action.job] = exchange.status
    else:
        services.lifecycle.signal(signal.SIGTERM if action.do == "sigterm" else signal.SIGINT)


async def _look(
    app: ASGIApp, services: Services, engine: FakeEngine, check: StateExpect, observed: _Observed
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


def _streamed_tokens(exchange: Exchange) -> int:
    """Text-carrying events so far: rbee `token` events or OpenAI content chunks."""
    total = 0
    for event in exchange.events:
        if event.name == "token" or _rbee_type(event) == "token":
            total += 1
        elif event.name is None and event.data.startswith("{") and _rbee_type(event) is None:
            choices = event.json().get("choices") or []
            if choices and (choices[0].get("text") or choices[0].get("delta", {}).get("content")):
                total += 1
    return total


def _rbee_type(event: SseEvent) -> str | None:
    """The `type` of a data-only rbee job frame (`started`, `token`, `end`, `error`)."""
    if event.name is not None or not event.data.startswith("{"):
        return None
    kind = event.json().get("type")
    return kind if isinstance(kind, str) else None


@dataclass
class _Summary:
    """What one exchange amounts to, whatever API it used."""

    status: int | None
    stop_reason: str | None = None
    finish_reason: str | None = None
    tokens: int | None = None
    text: str = ""
    error_code: str | None = None
    token_times: list[float] = field(default_factory=list)
    queue_position: int | Literal["none"] | None = None
    job_id: str | None = None
    marker: str | None = None
    choice_texts: dict[int, str] = field(default_factory=dict)
    choice_ends: dict[int, float] = field(default_factory=dict)


def _summarise(exchange: Exchange) -> _Summary:
    summary = _Summary(status=exchange.status, job_id=exchange.headers.get("x-request-id"))
    if not exchange.streaming:
        if not exchange.body:
            return summary
        body = exchange.json()
        if "error" in body:
            summary.error_code = body["error"]["code"]
            return summary
        if "sse_url" in body:  # a posted job whose stream was never read
            summary.job_id = body["job_id"]
            return summary
        for position, each in enumerate(body["choices"]):
            text = each.get("text") or each.get("message", {}).get("content") or ""
            index = each["index"]
            summary.choice_texts[position] = text if index == position else f"<index {index}>"
        choice = body["choices"][0]
        summary.finish_reason = choice["finish_reason"]
        summary.text = choice.get("text") or choice.get("message", {}).get("content") or ""
        summary.tokens = body["usage"]["completion_tokens"]
        return summary
    for event in exchange.events:
        if not event.data.startswith("{"):  # [DONE], or rbee's [CANCELLED] / [ERROR] ...
            summary.marker = event.data
            continue
        data = event.json()
        kind = event.name or _rbee_type(event)
        if kind == "started" and event.name is None:  # rbee's data-only job stream
            continue
        if kind == "token" and event.name is None:
            summary.text += data["t"]
            summary.token_times.append(event.at)
        elif kind == "end" and event.name is None:
            summary.stop_reason = data["stop_reason"]
            summary.tokens = data["tokens_out"]
        elif kind == "error" and event.name is None:
            summary.error_code = data["code"]
        elif event.name == "started":
            position = data["queue_position"]
            summary.queue_position = "none" if position is None else position
        elif event.name == "token":
            summary.text += data["t"]
            summary.token_times.append(event.at)
        elif event.name in ("progress", "ready"):
            continue  # /v1/loading/progress: see `load_events`
        elif event.name == "end":
            summary.stop_reason = data["stop_reason"]
            summary.tokens = data["tokens_out"]
        elif "error" in data:
            summary.error_code = data["error"]["code"]
        elif data.get("usage") and not data.get("choices"):
            summary.tokens = data["usage"]["completion_tokens"]
        else:
            choice = data["choices"][0]
            piece = choice.get("text") or choice.get("delta", {}).get("content")
            index = choice["index"]
            summary.choice_texts[index] = summary.choice_texts.get(index, "") + (piece or "")
            if choice.get("finish_reason"):
                summary.choice_ends[index] = event.at
            if index != 0:
                continue
            if piece:
                summary.text += piece
                summary.token_times.append(event.at)
            if choice.get("finish_reason"):
                summary.finish_reason = choice["finish_reason"]
    return summary


def _check(scenario: Scenario, observed: _Observed) -> list[str]:
    failures: list[str] = []
    if observed.gave_up_at is not None:
        unfinished = [r.id for r in scenario.request if r.id not in observed.exchanges]
        failures.append(
            f"scenario: still running at its time limit t={observed.gave_up_at:.3f} "
            f"(requests not finished: {', '.join(unfinished) or 'none'})"
        )
    for name, expect in scenario.expect.requests.items():
        exchange = observed.exchanges.get(name)
        if exchange is None:
            failures.append(f"request {name!r}: never ran (no such [[request]] id?)")
            continue
        if exchange.crashed is not None:
            failures.append(f"request {name!r}: the app raised {exchange.crashed}")
            continue
        summary = _summarise(exchange)
        got: dict[str, Any] = {
            "status": summary.status,
            "stop_reason": summary.stop_reason,
            "finish_reason": summary.finish_reason,
            "tokens": summary.tokens,
            "streamed_tokens": len(summary.token_times),
            "text": summary.text,
            "error_code": summary.error_code,
            "first_token_at": summary.token_times[0] if summary.token_times else None,
            "last_token_at": summary.token_times[-1] if summary.token_times else None,
            "ended_at": exchange.ended_at or exchange.disconnected_at,
            "queue_position": summary.queue_position,
            "job_id": summary.job_id,
            "retry_after": exchange.headers.get("retry-after"),
            "min_pings": len(exchange.pings),
            "load_events": [
                _load_event(event) for event in exchange.events if event.name in _LOAD_EVENTS
            ],
            "posted_status": posted.status if (posted := observed.posts.get(name)) else None,
            "marker": summary.marker,
            "data_only": not exchange.pings and all(e.name is None for e in exchange.events),
            "choices": [summary.choice_texts[i] for i in sorted(summary.choice_texts)],
            "choice_ends": [summary.choice_ends[i] for i in sorted(summary.choice_ends)],
        }
        end = got["ended_at"]
        when = "never ended" if end is None else f"ended at t={end:.3f}"
        for key, want in expect.model_dump(exclude_none=True).items():
            have = got[key]
            if key == "choice_ends":
                ok = len(have) == len(want) and all(map(_same, have, want))
            else:
                ok = have >= want if key == "min_pings" else _same(have, want)
            if not ok:
                failures.append(f"request {name!r}: expected {key}={want!r}, got {have!r} ({when})")
    for check, seen in observed.states:
        for key, want in check.model_dump(exclude_none=True).items():
            if key != "at" and seen[key] != want:
                failures.append(f"at t={check.at:.3f}: expected {key}={want!r}, got {seen[key]!r}")
    for job, want in scenario.expect.cancels.items():
        have = observed.cancel_status.get(job)
        if have != want:
            failures.append(f"cancel {job!r}: expected status {want}, got {have}")
    worker = scenario.expect
    if worker.exit_code is not None and observed.exit_code != worker.exit_code:
        failures.append(f"worker: expected exit code {worker.exit_code}, got {observed.exit_code}")
    if worker.stopped_at is not None and not _same(observed.stopped_at, worker.stopped_at):
        failures.append(
            f"worker: expected to stop at t={worker.stopped_at}, got t={observed.stopped_at}"
        )
    if worker.hive is not None:
        failures += check_hive(worker.hive, observed.hive, observed.hive_log)
    if worker.queen is not None:
        failures += check_queen(worker.queen, observed.queen, observed.queen_log)
    return failures


_LOAD_EVENTS = ("progress", "ready", "failed")


def _load_event(event: SseEvent) -> str:
    data = event.json()
    return f"{event.at:.3f} {event.name} {data.get('stage')} {data.get('progress')}"


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(have, int | float):
        return abs(have - want) < 1e-9
    return bool(have == want)


def scenario_paths(targets: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for target in targets:
        paths.extend(sorted(target.glob("*.toml")) if target.is_dir() else [target])
    return paths

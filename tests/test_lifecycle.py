"""LifecycleActor with the real actor stack on the fake engine, in virtual time."""

from __future__ import annotations

import json
import signal
from functools import partial

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.lifecycle import LifecycleActor
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.messages.lifecycle import Drain, Stop, WorkerState
from llm_worker_rbee.messages.session import Ended
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.testing.asgi import Exchange, asgi_request
from llm_worker_rbee.testing.inprocess import InProcessServer
from llm_worker_rbee.testing.stack import actor_stack
from llm_worker_rbee.worker import Runtime, run_worker
from tests.test_actors import collect, request


@pytest.mark.behavior("LIFE-002", "LIFE-004")
async def test_drain_lets_in_flight_work_finish(autojump_clock: trio.testing.MockClock) -> None:
    async with actor_stack(FakeScript(reply=["x"] * 8, step_latency=0.25)) as stack:
        actor = LifecycleActor(drain_timeout=30, handle_signals=False)
        async with trio.open_nursery() as nursery:
            lifecycle = await nursery.start(actor.run)
            await lifecycle.ready(stack.sessions)
            stream = stack.sessions.start(request("a"))
            await trio.sleep(0.5)
            lifecycle.request(Drain("test"))
            await trio.testing.wait_all_tasks_blocked()
            assert lifecycle.state is WorkerState.DRAINING
            end = (await collect(stream))[-1][1]
            await lifecycle.wait_stopped()
        assert isinstance(end, Ended) and end.stop_reason == "eos" and end.tokens_out == 8
        # 8 tokens + end-of-generation = 9 steps of 0.25 s; stopped as soon as the pool emptied
        assert trio.current_time() == 2.25
        assert lifecycle.state is WorkerState.STOPPED


@pytest.mark.behavior("LIFE-004")
async def test_drain_timeout_cancels_the_rest_with_a_final_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(reply=["x"] * 1000, step_latency=0.25), slots=1) as stack:
        actor = LifecycleActor(drain_timeout=2, handle_signals=False)
        async with trio.open_nursery() as nursery:
            lifecycle = await nursery.start(actor.run)
            await lifecycle.ready(stack.sessions)
            running = stack.sessions.start(request("a"))
            await trio.testing.wait_all_tasks_blocked()
            queued = stack.sessions.start(request("b"))
            await trio.testing.wait_all_tasks_blocked()
            lifecycle.request(Drain("test"))
            ends = [(await collect(s))[-1] for s in (running, queued)]
            await lifecycle.wait_stopped()
        assert [(t, e.stop_reason) for t, e in ends if isinstance(e, Ended)] == [
            (2.0, "cancelled"),
            (2.0, "cancelled"),
        ]
        await trio.sleep(1)
        assert stack.scheduler.statistics().slots_busy == 0 and stack.engine.active == []


@pytest.mark.behavior("LIFE-005")
async def test_stop_during_drain_cancels_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with actor_stack(FakeScript(reply=["x"] * 1000, step_latency=0.25)) as stack:
        actor = LifecycleActor(drain_timeout=30, handle_signals=False)
        async with trio.open_nursery() as nursery:
            lifecycle = await nursery.start(actor.run)
            await lifecycle.ready(stack.sessions)
            stream = stack.sessions.start(request("a"))
            await trio.sleep(1)
            lifecycle.request(Drain("first signal"))
            await trio.sleep(1)
            lifecycle.request(Stop("second signal"))
            end = (await collect(stream))[-1]
            await lifecycle.wait_stopped()
        assert end[0] == 2.0 and isinstance(end[1], Ended) and end[1].stop_reason == "cancelled"
        assert actor.stop_reason == "first signal"


@pytest.mark.behavior("LIFE-007")
async def test_the_worker_may_exit_once_served_before_the_unload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The whole worker: after the drain deadline, the way to `exit_when_served` waits on
    no timer (the same virtual instant), with every stream ended and the engine still
    loaded: a process that exits there leaves the free, which waits for the step in flight,
    to the OS (#23). A hook that returns gets the rest of the way down as before."""
    engine = FakeEngine(FakeScript(reply=["x"] * 1000, step_latency=0.125))
    server = InProcessServer()
    called: list[tuple[int, float, bool]] = []
    runtime = Runtime(
        runner=VirtualTimeStepRunner(0.125),
        server=server,
        handle_signals=False,
        exit_when_served=lambda code: called.append((code, trio.current_time(), engine.closed)),
    )
    settings = Settings(worker_id="w", drain_timeout=1.0)
    reads: list[Exchange] = []
    async with trio.open_nursery() as nursery:
        start = partial(run_worker, settings, model_id="m", engine_factory=lambda: engine)
        services = await nursery.start(partial(start, runtime=runtime))
        assert server.app is not None
        app = server.app

        async def read() -> None:
            body = json.dumps({"prompt": "hi", "stream": True}).encode()
            reads.append(await asgi_request(app, "POST", "/v1/inference", body=body))

        for _ in range(2):
            nursery.start_soon(read)
        await trio.sleep(0.5)
        services.lifecycle.signal(signal.SIGTERM)
    assert called == [(0, 1.5, False)]
    assert engine.closed  # the hook returned: unloaded as before
    for exchange in reads:
        assert exchange.events[-2].json()["stop_reason"] == "cancelled"
        assert exchange.events[-1].data == "[DONE]" and exchange.ended_at == 1.5

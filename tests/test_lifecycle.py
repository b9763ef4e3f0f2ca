"""LifecycleActor with the real actor stack on the fake engine, in virtual time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.lifecycle import LifecycleActor
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.messages.lifecycle import Drain, Stop, WorkerState
from llm_worker_rbee.messages.session import Ended
from llm_worker_rbee.testing.stack import actor_stack
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

"""The LifecycleActor's state machine and its inbox, on their own."""

from __future__ import annotations

import logging
import signal

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.lifecycle import LifecycleActor, LifecycleHandle, LifecycleStatistics
from llm_worker_rbee.messages.lifecycle import Drain, LifecycleCommand, Stop, WorkerState
from llm_worker_rbee.messages.session import StopReason


class Endless:
    """Work that never finishes by itself: the drain runs to its timeout."""

    async def wait_empty(self) -> None:
        await trio.sleep_forever()

    def abort_all(self, reason: StopReason) -> None:
        pass


@pytest.mark.behavior("LIFE-002")
async def test_nothing_leaves_draining_but_stopped(autojump_clock: trio.testing.MockClock) -> None:
    actor = LifecycleActor(drain_timeout=5, handle_signals=False)
    seen: list[WorkerState] = []
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(actor.run)

        async def follow() -> None:
            state = lifecycle.state
            while state is not WorkerState.STOPPED:
                state = await lifecycle.wait_state_change(state)
                seen.append(state)

        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        await lifecycle.loading()
        await lifecycle.ready(Endless())
        lifecycle.request(Drain("test"))
        await trio.testing.wait_all_tasks_blocked()
        await lifecycle.ready(Endless())  # ignored: a drain only ends in stopped
        assert lifecycle.state is WorkerState.DRAINING
        await lifecycle.wait_stopped()
        assert trio.current_time() == 5 + 2  # the drain timeout, then the abort grace
        await lifecycle.ready(Endless())  # ignored (and answered at once): stopped is final
    assert lifecycle.state is WorkerState.STOPPED
    assert seen == [
        WorkerState.LOADING,
        WorkerState.READY,
        WorkerState.DRAINING,
        WorkerState.STOPPED,
    ]


@pytest.mark.behavior("LIFE-006")
async def test_a_request_after_the_stop_is_ignored(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    actor = LifecycleActor(drain_timeout=5, handle_signals=False)
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(actor.run)
        lifecycle.request(Stop("first"))
        await lifecycle.wait_stopped()
    with caplog.at_level(logging.INFO, logger="llm_worker_rbee.actors.lifecycle"):
        lifecycle.request(Drain("too late"))  # returns at once, changes nothing
    assert actor.stop_reason == "first" and lifecycle.state is WorkerState.STOPPED
    assert "already stopped; ignored Drain(reason='too late')" in caplog.messages
    # A full inbox (nobody reading) drops the request rather than block the caller.
    send, _ = trio.open_memory_channel[LifecycleCommand](1)
    stuck = LifecycleHandle(send, LifecycleActor(drain_timeout=5, handle_signals=False))
    with caplog.at_level(logging.WARNING, logger="llm_worker_rbee.actors.lifecycle"):
        stuck.request(Drain("one"))
        stuck.request(Drain("two"))
    assert "lifecycle inbox full; dropped Drain(reason='two')" in caplog.messages


@pytest.mark.behavior("LIFE-005")
async def test_signals_go_through_the_inbox_and_the_actor_counts_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two signals sent before the actor reads either: the first drains, the second stops
    (the count is the actor's own, not the sender's); a transition after the stop returns
    at once."""
    traced: list[object] = []
    actor = LifecycleActor(
        drain_timeout=30, handle_signals=False, tracer=lambda _, m: traced.append(m)
    )
    async with trio.open_nursery() as nursery:
        lifecycle = await nursery.start(actor.run)
        await lifecycle.ready(Endless())
        lifecycle.signal(signal.SIGTERM)
        lifecycle.signal(signal.SIGINT)
        assert lifecycle.state is WorkerState.READY  # nothing applied until the actor reads
        await lifecycle.wait_stopped()
        assert trio.current_time() == 2  # no drain timeout: the abort grace only
        await lifecycle.fail("too late")
    assert lifecycle.statistics() == LifecycleStatistics(WorkerState.STOPPED, "SIGTERM")
    assert [m for m in traced if isinstance(m, Drain | Stop)] == [
        Drain("SIGTERM"),
        Stop("second SIGINT"),
    ]

"""The SlotScheduler on its own: a job holds one slot at most."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.scheduler import SlotScheduler
from llm_worker_rbee.messages.slots import Acquire, Granted, Leave, Queued, QueueFull, SlotReply


@pytest.mark.behavior("RES-004")
async def test_a_job_never_holds_two_slots() -> None:
    async with trio.open_nursery() as nursery:
        scheduler = await nursery.start(SlotScheduler(2, 2).run)

        async def ask(job: str) -> SlotReply:
            send, receive = trio.open_memory_channel[SlotReply](2)
            await scheduler.send(Acquire(job, send))
            return await receive.receive()

        assert await ask("a") == Granted(0)
        assert await ask("a") == QueueFull(0)  # already holds a slot: refused
        assert await ask("b") == Granted(1)
        assert await ask("c") == Queued(0)
        assert await ask("c") == QueueFull(1)  # already queued: refused
        await scheduler.send(Leave("a"))
        await trio.testing.wait_all_tasks_blocked()
        assert scheduler.statistics().slot_jobs == ("c", "b")
        assert scheduler.statistics().queued_jobs == ()
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("RES-013", "RES-014")
async def test_a_requests_waiting_choices_share_one_place_and_requests_take_turns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        scheduler = await nursery.start(SlotScheduler(1, 2).run)
        replies: dict[str, trio.MemoryReceiveChannel[SlotReply]] = {}

        async def ask(job: str, group: str | None = None) -> SlotReply:
            send, receive = trio.open_memory_channel[SlotReply](2)
            replies[job] = receive
            await scheduler.send(Acquire(job, send, group=group))
            return await receive.receive()

        assert await ask("big", "big") == Granted(0)
        for job in ("big.1", "big.2", "big.3"):
            assert await ask(job, "big") == Queued(0)  # one place for all three
        assert await ask("small") == Queued(1)
        assert await ask("late") == QueueFull(2, 1)  # no pace to estimate with: 1 s
        stats = scheduler.statistics()
        assert stats.queue_depth == 2
        assert stats.queued_jobs == ("big.1", "big.2", "big.3", "small")
        await trio.sleep(3)
        await scheduler.send(Leave("big"))
        assert await replies["big.1"].receive() == Granted(0)
        # The big request had its turn: small goes before its other choices.
        await scheduler.send(Leave("big.1"))
        assert await replies["small"].receive() == Granted(0)
        await scheduler.send(Leave("small"))
        assert await replies["big.2"].receive() == Granted(0)
        await scheduler.send(Leave("big.2"))
        assert await replies["big.3"].receive() == Granted(0)
        assert scheduler.statistics().queue_depth == 0
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("RES-003", "RES-014")
async def test_the_queue_is_bounded_by_the_wait_and_retry_after_by_the_work_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two slots, 0.1 slot-seconds a token, a wait of 10 s at most, room for 100 by count.
    scheduler_actor = SlotScheduler(2, 100, max_wait_s=10.0, pace=lambda: 0.1)
    async with trio.open_nursery() as nursery:
        scheduler = await nursery.start(scheduler_actor.run)
        replies: dict[str, trio.MemoryReceiveChannel[SlotReply]] = {}

        async def ask(job: str, budget: int | None, group: str | None = None) -> SlotReply:
            send, receive = trio.open_memory_channel[SlotReply](2)
            replies[job] = receive
            await scheduler.send(Acquire(job, send, group=group, budget=budget))
            return await receive.receive()

        assert scheduler.statistics().wait_s == 0.0  # a slot is free
        assert await ask("a", 50) == Granted(0)
        assert await ask("b", 50) == Granted(1)
        assert scheduler.statistics().wait_s == pytest.approx(5.0)  # 100 tokens x 0.1 / 2
        assert await ask("c", 100) == Queued(0)
        assert await ask("d", 10) == Queued(1)  # 10 s ahead of it: just in
        stats = scheduler.statistics()
        assert stats.wait_s == pytest.approx(10.5) and stats.full()
        # Over by 0.5 s, but no slot frees before a's and b's 50 tokens are done: 5 s.
        assert stats.retry_after == 5
        assert await ask("e", 10) == QueueFull(2, 5)
        assert await ask("d.1", 10, group="d") == Queued(1)  # its request has its place
        await trio.sleep(3)  # a and b have 20 tokens left each: 8 s ahead now
        assert scheduler.statistics().wait_s == pytest.approx(8.0)
        # No limit of its own: the typical job, 256 tokens before any job has ended.
        assert await ask("f", None) == Queued(2)
        assert scheduler.statistics().wait_s == pytest.approx(20.8)
        assert await ask("g", 1) == QueueFull(3, 11)  # 10.8 s over: 11
        await scheduler.send(Leave("a", tokens_out=46))
        assert await replies["c"].receive() == Granted(0)
        await scheduler.send(Leave("f"))  # left the queue: no job length learned
        # c 100, b 20 left; d and d.1 10 each; h now counts as 256 + 0.3 x (46 - 256) = 193.
        assert await ask("h", None) == Queued(1)
        assert scheduler.statistics().wait_s == pytest.approx((120 + 20 + 193) * 0.1 / 2)
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("RES-014")
async def test_steps_that_take_no_time_give_no_pace_and_no_wait_bound() -> None:
    # The fake engine with no step latency (the fuzzer's worker) measures a pace of 0.
    scheduler_actor = SlotScheduler(1, 2, max_wait_s=1.0, pace=lambda: 0.0)
    async with trio.open_nursery() as nursery:
        scheduler = await nursery.start(scheduler_actor.run)

        async def ask(job: str) -> SlotReply:
            send, receive = trio.open_memory_channel[SlotReply](2)
            await scheduler.send(Acquire(job, send, budget=100))
            return await receive.receive()

        assert await ask("a") == Granted(0)
        assert await ask("b") == Queued(0)
        assert await ask("c") == Queued(1)
        stats = scheduler.statistics()
        assert stats.wait_s is None and stats.retry_after == 1
        assert await ask("d") == QueueFull(2, 1)  # the count alone
        nursery.cancel_scope.cancel()

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
        assert await ask("late") == QueueFull(2, 1)  # no job has ended: 1 s
        stats = scheduler.statistics()
        assert stats.queue_depth == 2
        assert stats.queued_jobs == ("big.1", "big.2", "big.3", "small")
        await trio.sleep(3)
        await scheduler.send(Leave("big"))
        assert await replies["big.1"].receive() == Granted(0)
        assert scheduler.statistics().mean_job_s == 3.0
        # Three jobs wait (small, big.2, big.3), 3 s each on average, one slot: 9 s.
        assert await ask("late") == QueueFull(2, 9)
        # The big request had its turn: small goes before its other choices.
        await scheduler.send(Leave("big.1"))
        assert await replies["small"].receive() == Granted(0)
        await scheduler.send(Leave("small"))
        assert await replies["big.2"].receive() == Granted(0)
        await scheduler.send(Leave("big.2"))
        assert await replies["big.3"].receive() == Granted(0)
        assert scheduler.statistics().queue_depth == 0
        # Three holds of 0 s since, each weighing 0.3 in the mean.
        assert scheduler.statistics().mean_job_s == pytest.approx(3.0 * 0.7**3)
        nursery.cancel_scope.cancel()

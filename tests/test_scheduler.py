"""The SlotScheduler on its own: a job holds one slot at most."""

from __future__ import annotations

import pytest
import trio

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

"""The shared KV pool (fast mode): admission by cells, and the prompt cache giving way.

The scheduler on its own, the fake engine's cell accounting, and the actors together in
virtual time. The real engine's side is tests/e2e/test_long_context.py.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.scheduler import SchedulerHandle, SlotScheduler
from llm_worker_rbee.engine.base import EngineOutOfMemory, ModelInfo
from llm_worker_rbee.engine.cells import completion_limit
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.messages.session import Accepted, Ended, SessionEvent, Started
from llm_worker_rbee.messages.slots import Acquire, Granted, Leave, Queued, SlotReply
from llm_worker_rbee.testing.stack import actor_stack
from tests.test_actors import collect, last, request

GREEDY = SamplingParams(temperature=0)


class Asker:
    """Sends Acquire for a job and keeps its reply channel, to read its later Granted."""

    def __init__(self, scheduler: SchedulerHandle) -> None:
        self._scheduler = scheduler
        self.replies: dict[str, trio.MemoryReceiveChannel[SlotReply]] = {}

    async def ask(self, job: str, cells: int) -> SlotReply:
        send, receive = trio.open_memory_channel[SlotReply](2)
        self.replies[job] = receive
        await self._scheduler.send(Acquire(job, send, cells=cells))
        return await receive.receive()

    def granted(self, job: str) -> SlotReply | None:
        try:
            return self.replies[job].receive_nowait()
        except trio.WouldBlock:
            return None


@pytest.mark.behavior("RES-020")
async def test_a_request_waits_for_cells_with_slots_free_and_the_queue_keeps_its_order() -> None:
    async with trio.open_nursery() as nursery:
        scheduler = await nursery.start(SlotScheduler(4, 4, pool=100).run)
        asker = Asker(scheduler)
        assert await asker.ask("a", 60) == Granted(0)
        assert await asker.ask("b", 50) == Queued(0)  # three slots free, 40 cells: waits
        assert await asker.ask("c", 10) == Queued(1)  # would fit, but does not overtake b
        stats = scheduler.statistics()
        assert (stats.slots_busy, stats.cells_reserved, stats.pool_cells) == (1, 60, 100)
        await scheduler.send(Leave("a"))
        await trio.testing.wait_all_tasks_blocked()
        # a's 60 cells let both waiting requests in at once, in order.
        assert (asker.granted("b"), asker.granted("c")) == (Granted(0), Granted(1))
        assert scheduler.statistics().cells_reserved == 60
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("RES-020")
async def test_a_request_alone_always_starts_and_per_slot_streams_count_no_cells() -> None:
    async with trio.open_nursery() as nursery:
        pooled = await nursery.start(SlotScheduler(2, 2, pool=100).run)
        assert await Asker(pooled).ask("huge", 150) == Granted(0)  # nothing else to wait for
        exact = await nursery.start(SlotScheduler(2, 2).run)  # --batch-invariant: no pool
        asker = Asker(exact)
        assert await asker.ask("a", 10**6) == Granted(0)
        assert await asker.ask("b", 10**6) == Granted(1)
        nursery.cancel_scope.cancel()


def test_completion_limit_without_max_tokens_is_the_slots_share() -> None:
    pooled = ModelInfo("m", 4096, 4096, 10, 4096, None, "", "", kv_pool=4096, n_slots=4)
    assert completion_limit(pooled, 24, 100) == 100
    assert completion_limit(pooled, 24, 10_000) == 4096 - 24  # never past the pool
    assert completion_limit(pooled, 24, None) == 1024 - 24  # four such requests fit at once
    assert completion_limit(pooled, 3000, None) == 256  # a quarter of the share at least
    assert completion_limit(pooled, 4000, None) == 96  # and never past the pool
    exact = ModelInfo("m", 4096, 4096, 10, 1024, None, "", "", kv_pool=None, n_slots=4)
    assert completion_limit(exact, 24, None) == 1000  # to the end of the slot's stream


def _run(engine: FakeEngine, seq_id: int, prompt: str) -> None:
    """Admits `prompt` in `seq_id`, decodes it and one token, and ends the sequence."""
    engine.admit(seq_id, engine.tokenize(prompt, add_special=False), GREEDY)
    while not any(o.seq_id == seq_id for o in engine.step()):
        pass
    engine.cancel(seq_id)


@pytest.mark.behavior("RES-021")
def test_the_prompt_cache_of_the_least_recently_used_idle_slot_gives_way() -> None:
    engine = FakeEngine(FakeScript(n_ctx=64, n_slots=4, prompt_cache=True))
    _run(engine, 0, "a" * 30)
    _run(engine, 1, "b" * 20)
    assert (engine.held(0), engine.held(1), engine.cells_free()) == (30, 20, 14)
    engine.admit(2, engine.tokenize("c" * 40, add_special=False), GREEDY)
    engine.step()  # 40 cells wanted, 14 free: slot 0's cache (used longest ago) goes
    assert engine.evicted == [0]
    # 64 - 20 held - 41 (the prompt and its first token, which the fake makes in that step)
    assert (engine.held(0), engine.held(1), engine.cells_free()) == (0, 20, 3)
    # The cache that stayed is still found.
    prompt = engine.tokenize("b" * 20, add_special=False)
    assert engine.prompt_cache().choose_slot(prompt, [0, 1, 3]) == 1


@pytest.mark.behavior("RES-021")
def test_a_step_with_no_room_even_without_the_cache_runs_out_of_memory() -> None:
    # What the scheduler's reservations rule out: the engine does not evict running cells.
    engine = FakeEngine(FakeScript(n_ctx=64, n_slots=2))
    engine.admit(0, engine.tokenize("a" * 40, add_special=False), GREEDY)
    engine.admit(1, engine.tokenize("b" * 40, add_special=False), GREEDY)
    with pytest.raises(EngineOutOfMemory):
        engine.step()


@pytest.mark.behavior("RES-020", "RES-021")
async def test_under_load_requests_wait_for_cells_and_no_step_runs_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A pool of 256 cells, 4 slots; each request reserves its prompt and 64 tokens (~100).
    script = FakeScript(reply=["x"] * 64, n_ctx=256, n_slots=4, prompt_cache=True)
    async with actor_stack(script) as stack:
        streams = [
            stack.sessions.start(request(f"r{i}", f"prompt number {i} " * 2, max_tokens=64))
            for i in range(6)
        ]
        results: list[list[tuple[float, SessionEvent]]] = [[] for _ in streams]

        async def read(i: int) -> None:
            results[i] = await collect(streams[i])

        async with trio.open_nursery() as nursery:  # every client reads its stream at once
            for i in range(len(streams)):
                nursery.start_soon(read, i)
    ends = [last(events) for events in results]
    assert all(isinstance(end, Ended) and end.stop_reason == "max_tokens" for end in ends)
    # Two fit at once (2 x 98 of 256 cells); the others wait, though two slots are free.
    started = sorted(next(t for t, e in events if isinstance(e, Started)) for events in results)
    assert started[0] == started[1] == 0 < started[2]
    queued = [e.queue_position for events in results for _, e in events if isinstance(e, Accepted)]
    assert sorted(queued, key=lambda p: -1 if p is None else p) == [None, None, 0, 1, 2, 3]

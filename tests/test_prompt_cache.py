"""Slot choice by prompt cache and cached_tokens in usage, on the fake engine in virtual time."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.scheduler import SlotScheduler
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.engine.prompt_cache import GrownPrefix, SlotCaches
from llm_worker_rbee.messages.session import Ended, SessionEvent, Started
from llm_worker_rbee.messages.slots import Acquire, Granted, Leave, SlotReply
from llm_worker_rbee.testing.stack import actor_stack
from tests.test_actors import collect, last, request


def ended(events: list[tuple[float, SessionEvent]]) -> Ended:
    end = last(events)
    assert isinstance(end, Ended)
    return end


def slot_of(events: list[tuple[float, SessionEvent]]) -> int:
    (slot,) = (event.slot for _, event in events if isinstance(event, Started))
    return slot


@pytest.mark.behavior("RES-005")
async def test_the_scheduler_grants_the_slot_its_chooser_picks() -> None:
    asked: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def chooser(prompt: Sequence[int], free: Sequence[int]) -> int:
        asked.append((tuple(prompt), tuple(free)))
        return free[-1]

    async with trio.open_nursery() as nursery:
        handle = await nursery.start(SlotScheduler(3, 4, chooser=chooser).run)
        send, receive = trio.open_memory_channel[SlotReply](2)
        await handle.send(Acquire("a", send, prompt_tokens=(5, 6, 7)))
        assert await receive.receive() == Granted(2)
        await handle.send(Acquire("b", send, prompt_tokens=(8,)))
        assert await receive.receive() == Granted(1)
        assert asked == [((5, 6, 7), (0, 1, 2)), ((8,), (0, 1))]
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("RES-005")
async def test_a_chooser_that_picks_a_busy_slot_is_overruled() -> None:
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(SlotScheduler(2, 4, chooser=lambda p, f: 7).run)
        send, receive = trio.open_memory_channel[SlotReply](2)
        await handle.send(Acquire("a", send))
        assert await receive.receive() == Granted(0)
        await handle.send(Leave("a"))
        nursery.cancel_scope.cancel()


@pytest.mark.behavior("INF-021", "INF-027")
async def test_a_repeated_prompt_reports_its_cached_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(prompt_cache=True)) as stack:
        first = ended(await collect(stack.sessions.start(request("a", "hello there"))))
        again = ended(await collect(stack.sessions.start(request("b", "hello there"))))
        longer = ended(await collect(stack.sessions.start(request("c", "hello there, you"))))
    assert (first.tokens_in, first.cached_tokens) == (11, 0)
    # All but the last prompt token: its logits give the first new token.
    assert again.cached_tokens == 10
    assert longer.cached_tokens == 11


@pytest.mark.behavior("INF-027")
async def test_a_prompt_goes_to_the_slot_that_holds_its_prefix(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(prompt_cache=True)) as stack:
        alpha = stack.sessions.start(request("a", "alpha"))
        beta = stack.sessions.start(request("b", "beta"))
        slots = {"alpha": slot_of(await collect(alpha)), "beta": slot_of(await collect(beta))}
        for prompt in ("beta", "alpha", "beta"):
            events = await collect(stack.sessions.start(request(f"again-{prompt}", prompt)))
            assert slot_of(events) == slots[prompt]
            assert ended(events).cached_tokens == len(prompt) - 1


@pytest.mark.behavior("INF-027")
async def test_a_reply_cut_by_a_stop_string_still_reports_cached_tokens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["one", " two", " three"], prompt_cache=True)
    async with actor_stack(script) as stack:
        await collect(stack.sessions.start(request("a", "count")))
        end = ended(await collect(stack.sessions.start(request("b", "count", stop=(" two",)))))
    assert (end.stop_reason, end.cached_tokens) == ("stop_sequence", 4)


@pytest.mark.behavior("INF-027")
def test_the_llama_engines_snapshot_prefers_a_long_prefix_then_the_least_recently_used() -> None:
    """engine/prompt_cache.py: what the scheduler asks on the trio thread, frozen."""
    long = tuple(range(100, 120))
    caches = SlotCaches(
        held=MappingProxyType({0: long, 1: long[:5], 2: (7, 7, 7)}),
        last_used=MappingProxyType({0: 3, 1: 2, 2: 1}),
    )
    assert caches.choose_slot((*long, 1, 2), [0, 1, 2, 3]) == 0  # 20 shared tokens
    # 5 shared tokens are not worth a slot: the least recently used free slot (3, never).
    assert caches.choose_slot((*long[:5], 9, 9, 9, 9, 9), [1, 2, 3]) == 3
    assert caches.choose_slot((7, 7, 7, 7), [1, 2]) == 2  # a short prompt found whole counts
    with pytest.raises(ValueError):
        caches.choose_slot(long, [])


@pytest.mark.behavior("INF-027")
def test_a_running_sequences_snapshot_holds_what_it_generated_so_far() -> None:
    """A slot the scheduler freed before its Cancel reached the engine still offers the
    tokens its sequence generated (a client that leaves and comes back with the text it saw),
    and the snapshot keeps its length while the engine thread appends."""
    tokens = list(range(100, 104))  # a 4-token prompt
    tokens += [200, 201, 202, 203, 204, 205]  # and what it generated
    prefix = GrownPrefix(tokens)
    tokens.append(206)  # the next step, after the snapshot
    assert (len(prefix), list(prefix), prefix[-1], list(prefix[2:4])) == (
        10,
        tokens[:10],
        205,
        [102, 103],
    )
    with pytest.raises(IndexError):
        prefix[10]
    caches = SlotCaches(held=MappingProxyType({0: prefix}), last_used=MappingProxyType({}))
    assert caches.choose_slot((*tokens[:10], 9), [1, 0]) == 0  # 10 shared: worth the slot

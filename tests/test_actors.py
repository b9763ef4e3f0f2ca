"""The actors on the fake engine, in virtual time (MockClock, autojump): no real sleeps."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.messages.session import (
    Accepted,
    Ended,
    InferenceRequest,
    Rejected,
    SessionEvent,
    Started,
    TextDelta,
)
from llm_worker_rbee.testing.stack import ActorStack, actor_stack


def request(
    job_id: str, prompt: str = "hi", max_tokens: int = 64, stop: tuple[str, ...] = ()
) -> InferenceRequest:
    tokens = tuple(b + 3 for b in prompt.encode())
    return InferenceRequest(job_id, tokens, SamplingParams(), max_tokens, stop)


async def collect(stream: ChoiceStream) -> list[tuple[float, SessionEvent]]:
    events: list[tuple[float, SessionEvent]] = []
    async for _, event in stream:
        events.append((trio.current_time(), event))
        if isinstance(event, Ended | Rejected):
            break
    return events


def text_of(events: list[tuple[float, SessionEvent]]) -> str:
    return "".join(e.text for _, e in events if isinstance(e, TextDelta))


def last(events: list[tuple[float, SessionEvent]]) -> SessionEvent:
    return events[-1][1]


async def assert_idle(stack: ActorStack) -> None:
    # A step in flight sleeps in virtual time, which counts as blocked: let it end first.
    await trio.sleep(1)
    stats = stack.scheduler.statistics()
    assert stats.slots_busy == 0 and stats.queue_depth == 0
    assert stack.engine.active == []
    assert stack.sessions.live == 0


@pytest.mark.behavior("INF-018", "SSE-010")
async def test_one_request_streams_the_reply_and_frees_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(step_latency=0.125)) as stack:
        events = await collect(stack.sessions.start(request("a")))
        assert isinstance(events[0][1], Accepted) and events[0][1].queue_position is None
        assert isinstance(events[1][1], Started)
        assert text_of(events) == "Hello, world!"
        end = last(events)
        assert isinstance(end, Ended)
        assert (end.stop_reason, end.tokens_in, end.tokens_out) == ("eos", 2, 4)
        # four tokens then the end-of-generation token: five steps of 125 ms
        assert trio.current_time() == 0.625
        await assert_idle(stack)


@pytest.mark.behavior("INF-018")
async def test_max_tokens_ends_with_max_tokens(autojump_clock: trio.testing.MockClock) -> None:
    async with actor_stack() as stack:
        events = await collect(stack.sessions.start(request("a", max_tokens=2)))
        end = last(events)
        assert isinstance(end, Ended)
        assert (end.stop_reason, end.tokens_out) == ("max_tokens", 2)
        assert text_of(events) == "Hello,"
        await assert_idle(stack)


@pytest.mark.behavior("INF-016", "INF-018")
async def test_stop_string_across_tokens_is_never_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["Hel", "lo wo", "rld", " again"])
    async with actor_stack(script) as stack:
        events = await collect(stack.sessions.start(request("a", stop=("o w",))))
        end = last(events)
        assert isinstance(end, Ended) and end.stop_reason == "stop_sequence"
        assert text_of(events) == "Hell"
        await assert_idle(stack)
        assert stack.engine.cancelled == [0]


@pytest.mark.behavior("INF-017")
async def test_split_utf8_is_never_emitted_half(autojump_clock: trio.testing.MockClock) -> None:
    script = FakeScript(reply=[b"\xc3", b"\xa9t\xc3", b"\xa9"])
    async with actor_stack(script) as stack:
        events = await collect(stack.sessions.start(request("a")))
        deltas = [e.text for _, e in events if isinstance(e, TextDelta)]
        assert deltas == ["ét", "é"]
        assert [e.tokens for _, e in events if isinstance(e, TextDelta)] == [2, 1]


@pytest.mark.behavior("RES-001", "RES-002")
async def test_second_request_waits_in_line_then_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(step_latency=0.125), slots=1) as stack:
        results: dict[str, list[tuple[float, SessionEvent]]] = {}

        async def run(job: str) -> None:
            results[job] = await collect(stack.sessions.start(request(job)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run, "second")
        first, second = results["first"], results["second"]
        assert second[0][1] == Accepted("second", 0)
        assert first[-1][0] == 0.625
        assert isinstance(second[1][1], Started) and second[1][0] == 0.625
        assert second[-1][0] == 1.25
        assert text_of(second) == "Hello, world!"
        await assert_idle(stack)


@pytest.mark.behavior("RES-003")
async def test_full_queue_is_rejected_with_503(autojump_clock: trio.testing.MockClock) -> None:
    async with actor_stack(slots=1, max_queue=1) as stack:
        running = stack.sessions.start(request("a"))
        await trio.testing.wait_all_tasks_blocked()
        queued = stack.sessions.start(request("b"))
        await trio.testing.wait_all_tasks_blocked()
        rejected = await collect(stack.sessions.start(request("c")))
        assert trio.current_time() == 0.0
        event = last(rejected)
        assert isinstance(event, Rejected)
        assert (event.error.status, event.error.code) == (503, "all_slots_busy")
        await collect(running)
        await collect(queued)
        await assert_idle(stack)


@pytest.mark.behavior("SSE-009")
async def test_disconnect_mid_stream_frees_the_slot_within_one_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["x"] * 100, step_latency=0.125)
    async with actor_stack(script, slots=1) as stack:
        stream = stack.sessions.start(request("a"))
        tokens = 0
        async for _, event in stream:
            if isinstance(event, TextDelta):
                tokens += 1
                if tokens == 7:
                    break
        stream.close()  # what the HTTP layer does when the client goes away
        steps_before = stack.engine.steps
        # within one step the sequence is gone from the engine and the slot is free
        await trio.sleep(script.step_latency)
        await trio.testing.wait_all_tasks_blocked()  # a step that ends right now applies it
        assert stack.engine.cancelled == [0]
        assert stack.engine.steps - steps_before <= 1
        assert stack.scheduler.statistics().slots_busy == 0
        await assert_idle(stack)
        # the next request is served at once
        events = await collect(stack.sessions.start(request("b", max_tokens=1)))
        assert isinstance(events[0][1], Accepted) and events[0][1].queue_position is None


@pytest.mark.behavior("SSE-009", "RES-004")
async def test_queued_request_that_leaves_never_takes_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(reply=["x"] * 10), slots=1) as stack:
        running = stack.sessions.start(request("a"))
        await trio.testing.wait_all_tasks_blocked()
        queued = stack.sessions.start(request("b"))
        await trio.testing.wait_all_tasks_blocked()
        assert stack.scheduler.statistics().queued_jobs == ("b",)
        queued.close()
        await trio.testing.wait_all_tasks_blocked()
        assert stack.scheduler.statistics().queued_jobs == ()
        assert stack.scheduler.statistics().slot_jobs == ("a",)
        await collect(running)
        await assert_idle(stack)


@pytest.mark.behavior("RES-009")
async def test_engine_error_fails_the_step_and_the_worker_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(fail_at_steps=frozenset({3}))) as stack:
        failed = await collect(stack.sessions.start(request("a")))
        end = last(failed)
        assert isinstance(end, Ended) and end.stop_reason == "error"
        assert end.error is not None and end.error.status == 500
        assert text_of(failed) == "Hello,"
        ok = await collect(stack.sessions.start(request("b")))
        assert text_of(ok) == "Hello, world!"
        await assert_idle(stack)


@pytest.mark.behavior("LIFE-004")
async def test_abort_all_sends_a_final_cancelled_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with actor_stack(FakeScript(reply=["x"] * 100), slots=1) as stack:
        running = stack.sessions.start(request("a"))
        await trio.testing.wait_all_tasks_blocked()
        queued = stack.sessions.start(request("b"))
        await trio.sleep(0.05)
        stack.sessions.abort_all("cancelled")
        for stream in (running, queued):
            end = last(await collect(stream))
            assert isinstance(end, Ended) and end.stop_reason == "cancelled"
        await assert_idle(stack)

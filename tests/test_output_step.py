"""The output step and the pump in virtual time: text work where the tokens are made, a stop
string ending its sequence in the step that made it, the engine running ahead of a lagging
event loop within its window."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.messages.session import Ended, InferenceRequest, SessionEvent, TextDelta
from llm_worker_rbee.pipeline.output import SequenceText
from llm_worker_rbee.testing.stack import actor_stack
from tests.test_actors import collect, last, request, text_of

STEP = 0.125


@pytest.mark.behavior("INF-061")
async def test_a_stop_string_ends_its_sequence_at_the_step_that_made_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The event loop takes each step's outputs 1 s late, so the engine is 8 steps ahead of
    the session when the stop string is made: it still takes no step after it."""
    script = FakeScript(reply=["a", "b", "X", "Y", "c"] * 20, step_latency=STEP)
    async with actor_stack(script, lag=1.0) as stack:
        stream = stack.sessions.start(request("a", stop=("XY",)))
        seen: list[tuple[float, SessionEvent]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_into, stream, seen)
            # step 1 decodes the prompt and samples "a"; step 4 samples "Y": "XY" is made
            await trio.sleep(4 * STEP + STEP / 2)
            assert (stack.engine.steps, stack.engine.active) == (4, [])
            assert seen == []  # the session has not even seen the first token yet
        end = last(seen)
        assert isinstance(end, Ended)
        assert (end.stop_reason, end.tokens_out) == ("stop_sequence", 4)
        assert text_of(seen) == "ab"
        assert seen[-1][0] == 4 * STEP + 1.0  # the end reached it with the lag
        await trio.sleep(10)
        assert stack.engine.steps == 4  # zero steps after the stop
        assert stack.engine.cancelled == [0]


async def collect_into(stream: ChoiceStream, seen: list[tuple[float, SessionEvent]]) -> None:
    seen.extend(await collect(stream))


@pytest.mark.behavior("INF-062")
async def test_the_engine_runs_ahead_only_within_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["t"] * 100, step_latency=STEP)
    async with actor_stack(script, lag=10.0, steps_ahead=3) as stack:
        stream = stack.sessions.start(request("a", max_tokens=8))
        seen: list[tuple[float, SessionEvent]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_into, stream, seen)
            await trio.sleep(5)
            # three steps handed over and not taken, the fourth waits for room
            assert stack.engine.steps == 4
            assert seen == []
        deltas = [e for _, e in seen if isinstance(e, TextDelta)]
        assert "".join(d.text for d in deltas) == "t" * 8
        assert sum(d.tokens for d in deltas) == 8
        end = last(seen)
        assert isinstance(end, Ended) and end.stop_reason == "max_tokens"


@pytest.mark.behavior("INF-062", "RES-006")
async def test_a_session_that_cannot_send_finds_every_step_merged_in_its_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["t"] * 100, step_latency=STEP)
    async with actor_stack(script) as stack:
        stream = stack.sessions.start(request("a", max_tokens=60))
        await trio.sleep(60 * STEP + 1)  # nobody reads: the session blocks on its outbox
        assert stack.engine.active == []  # ...and the engine never waited for it
        events = await collect(stream)
        deltas = [e for _, e in events if isinstance(e, TextDelta)]
        assert "".join(d.text for d in deltas) == "t" * 60
        assert sum(d.tokens for d in deltas) == 60
        assert len(deltas) < 20  # the rest came merged, in one delta


@pytest.mark.behavior("INF-060")
def test_min_tokens_holds_off_stop_strings() -> None:
    text = SequenceText(0, ("b",), min_tokens=2)
    for piece in (b"a", b"b"):  # the first two tokens are never matched
        text.add(piece, None)
        assert not text.stopped
    text.add(b"b", None)
    assert text.stopped
    output = text.take(0)
    assert output is not None and (output.text, output.tokens) == ("ab", 3)


@pytest.mark.behavior("INF-060")
async def test_min_tokens_holds_off_a_stop_string_end_to_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["x", ",", "y", ",", "z"], step_latency=STEP)
    async with actor_stack(script) as stack:
        held = InferenceRequest("a", (1, 70), SamplingParams(min_tokens=2), 16, (",",))
        events = await collect(stack.sessions.start(held))
        assert text_of(events) == "x,y"
        end = last(events)
        assert isinstance(end, Ended) and (end.stop_reason, end.tokens_out) == ("stop_sequence", 4)

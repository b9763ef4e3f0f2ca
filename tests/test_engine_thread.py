"""The ModelActor on its engine thread (ThreadStepRunner), as in production, with the fake
engine at zero step latency. Real threads, so real time: each test is capped by fail_after
and nothing sleeps."""

from __future__ import annotations

import pytest
import trio

from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.actors.model import ModelActor, ModelHandle
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.messages.inference import (
    Abandon,
    Admit,
    Cancel,
    SamplingParams,
    SequenceFinished,
    TextOutput,
)
from llm_worker_rbee.pipeline.decode import DecodeLoop
from llm_worker_rbee.pipeline.runner import ThreadStepRunner

REPLY = [f" t{i}" for i in range(200)]


def admit(
    model: ModelHandle, seq_id: int, job: str, max_tokens: int
) -> tuple[Admit, OutputMailbox]:
    mailbox = OutputMailbox()
    prompt = tuple(model.tokenize(job, add_special=True))
    return Admit(seq_id, job, prompt, SamplingParams(), max_tokens, mailbox), mailbox


async def drain(mailbox: OutputMailbox) -> TextOutput:
    """Everything the sequence made, merged, up to its end."""
    got = await mailbox.get()
    while got.end is None:
        got = got.merged(await mailbox.get())
    return got


@pytest.mark.behavior("INF-025", "RES-007")
async def test_sequences_run_to_their_limits_on_the_engine_thread() -> None:
    engine = FakeEngine(FakeScript(reply=REPLY, step_latency=0.0, n_slots=3))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            model = await nursery.start(ModelActor(lambda: engine, ThreadStepRunner()).run)
            runs = [admit(model, seq, f"job-{seq}", 50 + 25 * seq) for seq in range(3)]
            for command, _ in runs:
                await model.send(command)
            results = [await drain(events) for _, events in runs]
            nursery.cancel_scope.cancel()
    for seq, output in enumerate(results):
        assert output.text == "".join(REPLY[: 50 + 25 * seq])
        assert output.tokens == 50 + 25 * seq
        assert output.end == SequenceFinished(
            seq, "length", len(runs[seq][0].prompt_tokens), 50 + 25 * seq
        )
    assert not engine.has_work()


@pytest.mark.behavior("RES-006")
async def test_a_gone_session_frees_its_slot_but_not_the_next_sequence_there() -> None:
    """Tokens of steps the thread ran ahead can reach a session that already left; dropping
    that sequence must not touch the request admitted to the same slot since."""
    engine = FakeEngine(FakeScript(reply=REPLY, step_latency=0.0, n_slots=1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            model = await nursery.start(ModelActor(lambda: engine, ThreadStepRunner()).run)
            first, first_mailbox = admit(model, 0, "first", 150)
            await model.send(first)
            assert (await first_mailbox.get()).end is None
            first_mailbox.close()  # the session is gone, its sequence still runs ahead
            await model.send(Cancel(0))
            second, second_mailbox = admit(model, 0, "second", 100)
            await model.send(second)
            output = await drain(second_mailbox)
            nursery.cancel_scope.cancel()
    assert isinstance(output.end, SequenceFinished)
    assert output.end.completion_tokens == 100
    assert output.tokens == 100
    assert not engine.has_work()


@pytest.mark.behavior("LOAD-020", "RES-007")
async def test_shutdown_stops_the_thread_while_sequences_run() -> None:
    engine = FakeEngine(FakeScript(reply=REPLY * 100, step_latency=0.0, n_slots=2))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            model = await nursery.start(ModelActor(lambda: engine, ThreadStepRunner()).run)
            command, mailbox = admit(model, 0, "long", 10_000)
            await model.send(command)
            assert (await mailbox.get()).end is None
            nursery.cancel_scope.cancel()
    assert engine.closed


@pytest.mark.behavior("RES-006")
def test_abandon_drops_only_the_sequence_it_names() -> None:
    """The deterministic core of the test above: a stale Abandon (its session gone, the slot
    since given to another request) must not touch the slot's new sequence."""
    engine = FakeEngine(FakeScript(reply=REPLY, step_latency=0.0, n_slots=1))
    loop = DecodeLoop(engine)
    first = Admit(0, "first", (1, 70), SamplingParams(), 8, OutputMailbox())
    second = Admit(0, "second", (1, 71), SamplingParams(), 8, OutputMailbox())
    loop.apply(first)
    loop.step()
    loop.apply(Cancel(0))
    loop.apply(second)
    loop.apply(Abandon(first))  # late: the first session's channel closed steps ago
    assert loop.busy
    assert [admit.job_id for admit, _ in loop.step()] == ["second"]
    loop.apply(Abandon(second))
    assert not loop.busy
    assert not engine.has_work()


@pytest.mark.behavior("HTTP-062")
def test_the_snapshot_lists_the_running_sequences_in_slot_order() -> None:
    """Admitted in any order, the status snapshot lists them by slot, with their progress;
    a sequence dropped leaves the others in order."""
    engine = FakeEngine(FakeScript(reply=REPLY, step_latency=0.0, n_slots=3))
    loop = DecodeLoop(engine)
    for seq_id in (2, 0, 1):
        loop.apply(
            Admit(seq_id, f"job{seq_id}", (1, 70 + seq_id), SamplingParams(), 8, OutputMailbox())
        )
    loop.step()
    listed = loop.statistics().sequences
    assert [(s.seq_id, s.job_id, s.prompt_tokens) for s in listed] == [
        (0, "job0", 2),
        (1, "job1", 2),
        (2, "job2", 2),
    ]
    loop.apply(Cancel(1))
    loop.step()
    assert [s.seq_id for s in loop.statistics().sequences] == [0, 2]

"""On the real model and the production pump (the engine thread, stepping back to back): a
stop string ends its sequence in the engine step that sampled it, while another stream keeps
the engine stepping."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.actors.model import ModelActor, ModelHandle
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.base import SeqOutput
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import (
    Admit,
    SamplingParams,
    SequenceFinished,
    TextOutput,
)
from llm_worker_rbee.pipeline.runner import ThreadStepRunner

pytestmark = pytest.mark.real_model

# No end-of-generation: twelve tokens to take a stop string from, and sequence 1 runs on.
GREEDY = SamplingParams(temperature=0, ignore_eos=True)
PROMPT = "Count from one to twenty in words: one, two,"


@pytest.fixture
def engine() -> Iterator[LlamaEngine]:
    settings = Settings(
        backend="cpu", ctx_size=1024, slots=2, batch_size=64, threads=2, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    yield engine
    engine.close()


async def run(
    model: ModelHandle, seq_id: int, max_tokens: int, stop: tuple[str, ...] = ()
) -> TextOutput:
    mailbox = OutputMailbox()
    prompt = tuple(model.tokenize(PROMPT, add_special=True))
    await model.send(Admit(seq_id, f"job-{seq_id}", prompt, GREEDY, max_tokens, mailbox, stop))
    got = await mailbox.get()
    while got.end is None:
        got = got.merged(await mailbox.get())
    return got


async def beside_a_stream(model: ModelHandle, stop: tuple[str, ...] = ()) -> TextOutput:
    """Sequence 0 (12 tokens at most) while sequence 1 (40) keeps the engine stepping."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, model, 1, 40)
        return await run(model, 0, 12, stop)


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-061")
async def test_a_stop_string_ends_the_sequence_at_the_step_that_sampled_it(
    engine: LlamaEngine,
) -> None:
    """Promise: exact mode (this engine runs batch_invariant), a sequence's tokens do not
    depend on what its slot's cache held or on how its steps line up with another's
    (docs/API.md, "Same request, same text"): the second run writes the first run's tokens
    up to the stop string taken from them."""
    steps: list[list[SeqOutput]] = []
    real_step = engine.step

    def counting_step() -> list[SeqOutput]:
        outputs = real_step()
        steps.append(outputs)
        return outputs

    engine.step = counting_step  # type: ignore[method-assign]
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            model = await nursery.start(ModelActor(lambda: engine, ThreadStepRunner()).run)
            await beside_a_stream(model)
            pieces = [o.piece for step in steps for o in step if o.seq_id == 0]
            # the stop string: the first token, from the 4th on, whose text is new
            index, stop = next(
                (i, p.decode())
                for i, p in enumerate(pieces)
                if i >= 3 and p.strip() and p.decode() not in b"".join(pieces[:i]).decode()
            )
            steps.clear()
            stopped = await beside_a_stream(model, (stop,))
            nursery.cancel_scope.cancel()
    assert isinstance(stopped.end, SequenceFinished) and stopped.end.reason == "stop"
    assert stopped.text == b"".join(pieces[:index]).decode()
    assert stopped.tokens == index + 1
    with_seq0 = [n for n, step in enumerate(steps) if any(o.seq_id == 0 for o in step)]
    made_stop = with_seq0[index]
    assert [o.piece for o in steps[made_stop] if o.seq_id == 0] == [pieces[index]]
    assert any(o.seq_id == 1 for o in steps[-1])  # the engine stepped on for sequence 1...
    assert with_seq0[-1] == made_stop  # ...and took zero steps for sequence 0 after its stop

"""N-gram speculation on the real model (the fast mode's default): drafts are decoded and
kept on text that repeats its prompt, and what a mode promises still holds with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal

import httpx
import jsonschema
import llama_cpp
import pytest

from bench.bursts import counter
from bench.common import PROMPTS
from bench.echo import CODE, WORKLOADS
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.draft_plan import TOTALS
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.engine.ngram import DRAFT_ROWS, MEMORY_FIRST, MEMORY_LATER, Proposal
from llm_worker_rbee.grammar import schema_grammar
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams, TokenLogprobs
from llm_worker_rbee.testing.process import WorkerProcess

DRAFTED = "llm_worker:spec_decode_num_draft_tokens_total"
ACCEPTED = "llm_worker:spec_decode_num_accepted_tokens_total"
SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "maxLength": 400}},
    "required": ["code"],
}


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerProcess]:
    """A fast-mode worker with the default speculation (the shared one runs without it)."""
    process = WorkerProcess(["--slots", "2", "--ctx-size", "2048", "--threads", "1"]).start()
    yield process
    process.stop()


@pytest.mark.behavior("INF-068")
def test_an_echo_is_drafted_and_kept_and_a_schema_still_holds(worker: WorkerProcess) -> None:
    """No text is compared: the fast mode promises none across different batches. The
    counters say drafts were verified and kept; a json_schema reply, whose grammar runs in
    the same sampler chain that verifies the drafts, parses and validates."""
    before = counter(worker.url, DRAFTED), counter(worker.url, ACCEPTED)
    body = {"prompt": WORKLOADS["echo"], "max_tokens": 96, "temperature": 0}
    echo = httpx.post(f"{worker.url}/v1/completions", json={**body, "ignore_eos": True})
    assert echo.status_code == 200 and echo.json()["usage"]["completion_tokens"] == 96
    drafted = counter(worker.url, DRAFTED) - before[0]
    accepted = counter(worker.url, ACCEPTED) - before[1]
    assert drafted > 0 and 0 < accepted <= drafted
    prompt = f"```python\n{CODE}```\n\nThat file as JSON {{code}}:\n"
    constrained = httpx.post(
        f"{worker.url}/v1/completions",
        json={"prompt": prompt, "max_tokens": 200, "temperature": 0, "json_schema": SCHEMA},
        timeout=120,
    )
    choice = constrained.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        jsonschema.validate(json.loads(choice["text"]), SCHEMA)


@pytest.mark.behavior("INF-068")
def test_a_request_may_turn_speculation_off(worker: WorkerProcess) -> None:
    before = counter(worker.url, DRAFTED)
    body = {"prompt": WORKLOADS["quote"], "max_tokens": 48, "temperature": 0}
    reply = httpx.post(
        f"{worker.url}/v1/completions", json={**body, "speculative.n_max": 0}, timeout=120
    )
    assert reply.status_code == 200
    assert counter(worker.url, DRAFTED) == before


@pytest.mark.behavior("INF-068")
def test_after_every_step_the_kv_cells_hold_exactly_the_kept_tokens() -> None:
    """The engine itself, fast mode: drafts that the model did not follow leave no cell
    behind (a stale one would sit in the sequence's attention from then on)."""
    settings = Settings(backend="cpu", ctx_size=2048, slots=1, threads=1)
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    memory = llama_cpp.llama_get_memory(engine._ctx)
    try:
        # The warm-up timed each row count a step with drafts may total, and left no cell.
        assert sorted(engine._step_costs.seconds) == [t for t in TOTALS if t <= 1 + DRAFT_ROWS]
        assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == -1
        prompt = engine.tokenize(WORKLOADS["quote"], add_special=True)
        engine.admit(0, prompt, SamplingParams(temperature=0, ignore_eos=True))
        sampled = 0
        while sampled < 120:
            sampled += len(engine.step())
            kept = len(engine._seqs[0].tokens)  # decoded: the prompt and kept tokens
            assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == kept - 1
        # Some drafts were kept and some rejected, so both paths ran.
        assert 0 < engine.accepted < engine.drafted
        engine.cancel(0)
    finally:
        engine.close()


def _greedy(
    engine: LlamaEngine, prompt: list[int], sampling: SamplingParams, n: int
) -> list[TokenLogprobs]:
    """Up to `n` greedy tokens of one sequence (fewer at an end of generation), each with
    its logprob and the likeliest alternatives."""
    engine.admit(0, prompt, sampling)
    out: list[TokenLogprobs] = []
    ended = False
    while len(out) < n and not ended:
        for output in engine.step():
            assert output.logprobs is not None
            out.append(output.logprobs)
            ended = ended or output.is_eog
    engine.cancel(0)
    return out[:n]


@pytest.mark.behavior("INF-068")
@pytest.mark.parametrize("workload", ["quote", "json", "schema"])
def test_greedy_text_with_and_without_drafts_agrees_up_to_a_near_tie(workload: str) -> None:
    """The fast mode verifies a draft in a batch of several rows, where a plain step decodes
    one; llama.cpp's kernels then sum in another order (on the AVX-512 EPYC here a row's
    logits are bit-equal while a sequence has up to 7 rows in a decode, and differ from 8
    on), so logits differ a little, and where the two best tokens are that close the greedy
    text may take the other. So the promise tested is: the texts agree up to their first
    difference, and there the two tokens were a near-tie (within 0.5 nats). A stale KV cell
    or a draft kept against the sampler would diverge far from any tie. Both runs start
    from the same cache state (the prompt cached by a first run, its last token decoded
    again): a prompt decoded whole takes other kernels than one read from the cache, which
    would be a difference of the cache, not of the drafts. The schema case runs a
    json_schema's grammar in the sampler chain that verifies the drafts."""
    settings = Settings(backend="cpu", ctx_size=2048, slots=1, threads=1)
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    try:
        if workload == "schema":
            text = f"```python\n{CODE}```\n\nThat file as JSON {{code}}:\n"
            base = SamplingParams(temperature=0, logprobs=5, grammar=schema_grammar(SCHEMA))
        else:
            text = WORKLOADS[workload]
            base = SamplingParams(temperature=0, logprobs=5, ignore_eos=True)
        prompt = engine.tokenize(text, add_special=True)
        _greedy(engine, prompt, replace(base, draft_max=0), 1)  # the prompt into the cache
        plain = _greedy(engine, prompt, replace(base, draft_max=0), 96)
        drafted_before = engine.drafted
        drafted = _greedy(engine, prompt, base, 96)
        assert engine.drafted > drafted_before  # the drafts did run
    finally:
        engine.close()
    pairs = list(zip(plain, drafted, strict=False))
    first = next((i for i, (a, b) in enumerate(pairs) if a.chosen.token != b.chosen.token), None)
    agree = len(pairs) if first is None else first
    print(f"\n{workload}: the first {agree} of {len(pairs)} greedy tokens agree")
    if first is not None:
        a, b = pairs[first]
        assert abs(a.chosen.logprob - b.chosen.logprob) < 0.5
        rival = next((t for t in a.top if t.token == b.chosen.token), None)
        assert rival is None or a.chosen.logprob - rival.logprob < 0.5


@pytest.mark.behavior("INF-068")
@pytest.mark.parametrize("speculation", ["ngram", "prompt"])
def test_a_repeated_request_is_proposed_the_first_ones_output_unless_prompt_only(
    speculation: Literal["ngram", "prompt"],
) -> None:
    """The worker's memory of outputs: a second request with the same prompt, in another
    slot, is proposed what the first one generated, from its first token on (its own prompt
    has none of it to copy); `--speculation prompt` remembers nothing. A grammar
    holds the first answer to words that never repeat, so no 16 tokens of it occur twice
    (the memory keeps the latest writer's word for a context, which a loop would change)."""
    settings = Settings(backend="cpu", ctx_size=2048, slots=2, threads=1, speculation=speculation)
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    counted = "one two three four five six seven eight nine ten eleven twelve thirteen"
    grammar = f'root ::= " {counted} fourteen fifteen sixteen seventeen eighteen nineteen"'
    try:
        prompt = engine.tokenize(PROMPTS[0], add_special=True)
        greedy = SamplingParams(temperature=0, logprobs=0, grammar=grammar)
        first = [out.chosen.token for out in _greedy(engine, prompt, greedy, 40)]
        assert len(first) >= 16
        engine.admit(1, prompt, greedy)
        drafter = engine._seqs[1].drafter
        assert drafter is not None
        proposal = drafter.propose(16)
        engine.cancel(1)
    finally:
        engine.close()
    if speculation == "ngram":
        assert proposal == Proposal(first[:16], [MEMORY_FIRST] + [MEMORY_LATER] * 15)
    else:
        assert not {MEMORY_FIRST, MEMORY_LATER} & set(proposal.kinds)

"""Grammars, min_tokens and logprobs in the llama.cpp engine, on the real bundled model."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import jsonschema_rs
import llama_cpp
import pytest

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.engine.sampling import Chains, SeqSampler
from llm_worker_rbee.grammar import schema_grammar
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams, TokenLogprobs

pytestmark = pytest.mark.real_model

# No n-gram drafts: tests here compare two greedy runs of one prompt, which the fast mode
# promises only in the same state, and the drafts a step takes depend on the memory of
# outputs the first run wrote (docs/API.md, "Same request, same text").
SETTINGS = Settings(
    backend="cpu", ctx_size=1024, slots=1, threads=2, log_level="warning", speculation="off"
)
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
# No free-form strings: cheap enough for the grammar on the whole vocabulary every token.
SETTLED = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["colour", "count", "ok"],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    engine = LlamaEngine.load(bundled_model_path(), SETTINGS, "gemma")
    yield engine
    engine.close()


def generate(
    engine: LlamaEngine, prompt: list[int], sampling: SamplingParams, limit: int
) -> tuple[list[int], bool, list[TokenLogprobs]]:
    """(tokens before the end, whether it ended with end-of-generation, their logprobs)."""
    engine.admit(0, prompt, sampling)
    tokens: list[int] = []
    logprobs: list[TokenLogprobs] = []
    try:
        while len(tokens) < limit:
            for output in engine.step():
                if output.is_eog:
                    return tokens, True, logprobs
                tokens.append(output.token)
                if output.logprobs is not None:
                    logprobs.append(output.logprobs)
        return tokens, False, logprobs
    finally:
        engine.cancel(0)


def warm(engine: LlamaEngine, prompt: list[int]) -> None:
    """Leaves `prompt` in the slot's cells: every run after it reuses them and decodes only
    the last prompt token, so they all meet the same state, where the fast mode promises the
    same logits (docs/API.md, "Same request, same text"); a run decoded whole might round
    otherwise."""
    generate(engine, prompt, SamplingParams(temperature=0), 1)


def text_of(engine: LlamaEngine, tokens: list[int]) -> str:
    return b"".join(engine.token_piece(t) for t in tokens).decode()


@pytest.mark.parametrize(
    "sampling",
    [SamplingParams(temperature=0), SamplingParams(temperature=0.8, seed=11)],
    ids=["greedy", "seeded"],
)
@pytest.mark.behavior("INF-012")
def test_a_json_schema_grammar_gives_json_that_validates(
    engine: LlamaEngine, sampling: SamplingParams
) -> None:
    grammar = schema_grammar(PERSON)
    prompt = engine.tokenize("Here is a JSON object describing a person:\n", add_special=True)
    with_grammar = dataclasses.replace(sampling, grammar=grammar)
    tokens, ended, _ = generate(engine, prompt, with_grammar, 200)
    assert ended  # the grammar lets end-of-generation through once the object is complete
    value = json.loads(text_of(engine, tokens))
    jsonschema_rs.validate(PERSON, value)


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-013")
def test_the_grammar_shortcuts_choose_what_the_whole_vocabulary_would(
    engine: LlamaEngine,
) -> None:
    """Sampling first without the grammar and re-sampling from a shortlist (sampling.py)
    must not change a greedy answer: compare with llama.cpp's grammar sampler run over the
    whole vocabulary at every token. Promise: fast mode, the same prompt meeting the same
    state gets the same logits (docs/API.md, "Same request, same text"): both runs reuse the
    cells `warm` left, in the one slot, alone."""
    grammar = schema_grammar(SETTLED)
    prompt = engine.tokenize("Settings as JSON:\n", add_special=True)
    warm(engine, prompt)
    fast, fast_ended, _ = generate(
        engine, prompt, SamplingParams(temperature=0, grammar=grammar), 80
    )
    engine.admit(0, prompt, SamplingParams(temperature=0))
    seq = engine._seqs[0]
    seq.sampler.close()
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, engine._grammar(grammar))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    seq.sampler = SeqSampler(
        Chains(chain, chain, chain, 1),
        SamplingParams(temperature=0),
        n_vocab=engine.info.n_vocab,
        eog=[],
        eos=llama_cpp.llama_vocab_eos(engine._vocab),
    )
    reference: list[int] = []
    reference_ended = False
    try:
        while len(reference) < 80 and not reference_ended:
            for output in engine.step():
                reference_ended = output.is_eog
                if not output.is_eog:
                    reference.append(output.token)
    finally:
        engine.cancel(0)
    assert (fast, fast_ended) == (reference, reference_ended)
    jsonschema_rs.validate(SETTLED, json.loads(text_of(engine, fast)))


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-011")
def test_min_tokens_holds_off_the_end(engine: LlamaEngine) -> None:
    """The base model seldom ends on its own: a bias makes its end-of-sequence token
    certain, so it ends at once, and with min_tokens exactly there. Promise: fast mode, the
    same prompt meeting the same state gets the same logits (docs/API.md, "Same request,
    same text"): the held run and a greedy one with every end-of-generation token banned
    (ignore_eos) both reuse the cells `warm` left, in the one slot, alone."""
    prompt = engine.tokenize("The capital of France is", add_special=True)
    eos = llama_cpp.llama_vocab_eos(engine._vocab)
    eager = SamplingParams(temperature=0, logit_bias=((eos, 100.0),))
    warm(engine, prompt)
    assert generate(engine, prompt, eager, 64)[:2] == ([], True)
    held, ended, _ = generate(engine, prompt, dataclasses.replace(eager, min_tokens=12), 64)
    assert ended and len(held) == 12
    # Only the end-of-generation tokens were held off: the rest is greedy without them.
    greedy = SamplingParams(temperature=0, ignore_eos=True)
    assert held == generate(engine, prompt, greedy, 12)[0]


@pytest.mark.behavior("INF-013")
def test_a_complete_grammar_ends_even_before_min_tokens(engine: LlamaEngine) -> None:
    """Only end-of-generation may follow a complete grammar; min_tokens (or ignore_eos)
    bans it, so the sequence ends there rather than break the grammar."""
    grammar = schema_grammar({"enum": ["yes", "no"]})
    prompt = engine.tokenize("Answer yes or no:", add_special=True)
    for sampling in (
        SamplingParams(temperature=0, grammar=grammar, min_tokens=50),
        SamplingParams(temperature=0, grammar=grammar, ignore_eos=True),
    ):
        tokens, ended, _ = generate(engine, prompt, sampling, 50)
        assert ended and json.loads(text_of(engine, tokens)) in ("yes", "no")


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-014")
def test_logprobs_are_a_distribution_and_leave_the_tokens_alone(engine: LlamaEngine) -> None:
    """Promise: fast mode, the same prompt meeting the same state gets the same logits
    (docs/API.md, "Same request, same text"): a seeded run with logprobs and one without
    both reuse the cells `warm` left, in the one slot, alone."""
    prompt = engine.tokenize("The capital of France is", add_special=True)
    warm(engine, prompt)
    seeded = SamplingParams(temperature=0.9, seed=5)
    plain, _, none = generate(engine, prompt, seeded, 12)
    tokens, _, logprobs = generate(engine, prompt, dataclasses.replace(seeded, logprobs=5), 12)
    assert none == [] and tokens == plain
    assert [e.chosen.token for e in logprobs] == tokens
    for entry in logprobs:
        top = [t.logprob for t in entry.top]
        assert len(top) == 5 and top == sorted(top, reverse=True)
        assert top[0] <= 0 and entry.chosen.logprob <= top[0]
        assert sum(math.exp(lp) for lp in top) <= 1 + 1e-6
        assert entry.chosen.piece == engine.token_piece(entry.chosen.token)
    greedy, _, greedy_logprobs = generate(
        engine, prompt, SamplingParams(temperature=0, logprobs=1), 8
    )
    # Greedy without bias or penalties takes the raw distribution's likeliest token.
    assert [e.top[0].token for e in greedy_logprobs] == greedy
    assert all(e.top[0].logprob == e.chosen.logprob for e in greedy_logprobs)


@pytest.mark.behavior("INF-012")
def test_check_grammar_refuses_what_llama_cpp_cannot_parse(engine: LlamaEngine) -> None:
    engine.check_grammar(schema_grammar(PERSON))
    with pytest.raises(ValueError, match="could not parse"):
        engine.check_grammar("root ::= undefined-rule")

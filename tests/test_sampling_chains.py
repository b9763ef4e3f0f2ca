"""The sampler chains llama.cpp runs for one sequence, on a small made-up vocabulary (no
model needed), and how request fields become their parameters."""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp
import numpy as np
import pytest

from llm_worker_rbee.engine.sampling import TOKEN_DATA, _apply, build_chains
from llm_worker_rbee.http.schemas import CompletionBody
from llm_worker_rbee.http.translate import sampling_from
from llm_worker_rbee.messages.inference import SamplingParams

# Token 3 is the likeliest, then 7, 6, 5...
LOGITS = np.array([0, 1, 2, 7, 3, 4, 5, 6], dtype=np.float32)


def pick(sampling: SamplingParams, eog: Sequence[int] = ()) -> int:
    """The token the chain for `sampling` takes from LOGITS."""
    chains = build_chains(sampling, [], len(LOGITS), list(eog))
    try:
        candidates = np.zeros(len(LOGITS), dtype=TOKEN_DATA)
        candidates["id"] = np.arange(len(LOGITS))
        candidates["logit"] = LOGITS
        return _apply(chains.whole, candidates)
    finally:
        llama_cpp.llama_sampler_free(chains.whole)


@pytest.mark.behavior("INF-007")
def test_greedy_takes_the_best_token() -> None:
    assert pick(SamplingParams(temperature=0)) == 3
    # top_k 1 leaves one candidate whatever the temperature and seed
    assert {pick(SamplingParams(temperature=1.5, top_k=1, seed=s)) for s in range(5)} == {3}


@pytest.mark.behavior("INF-009")
def test_logit_bias_bans_a_token() -> None:
    assert pick(SamplingParams(temperature=0, logit_bias=((3, -100.0),))) == 7
    assert pick(SamplingParams(temperature=0, logit_bias=((0, 100.0),))) == 0


@pytest.mark.behavior("INF-010")
def test_ignore_eos_bans_the_end_of_generation() -> None:
    assert pick(SamplingParams(temperature=0), eog=[3]) == 3
    assert pick(SamplingParams(temperature=0, ignore_eos=True), eog=[3, 7]) == 6


@pytest.mark.behavior("INF-007")
def test_request_fields_become_the_sampling_params() -> None:
    defaults = sampling_from(CompletionBody(prompt="x"), n_vocab=100)
    assert defaults == SamplingParams()
    assert (defaults.temperature, defaults.top_k, defaults.top_p, defaults.min_p) == (
        0.8,
        40,
        0.95,
        0.05,
    )
    body = CompletionBody(
        prompt="x",
        temperature=0,
        top_k=0,
        top_p=0.5,
        min_p=0.1,
        repeat_penalty=1.1,
        presence_penalty=-1,
        frequency_penalty=2,
        seed=7,
        logit_bias={"5": -100, "6": 2.5},
        ignore_eos=True,
        min_tokens=3,
    )
    assert sampling_from(body, n_vocab=100, grammar="root ::= x", logprobs=2) == SamplingParams(
        temperature=0.0,
        top_k=0,
        top_p=0.5,
        min_p=0.1,
        repeat_penalty=1.1,
        presence_penalty=-1.0,
        frequency_penalty=2.0,
        seed=7,
        logit_bias=((5, -100.0), (6, 2.5)),
        ignore_eos=True,
        grammar="root ::= x",
        min_tokens=3,
        logprobs=2,
    )

"""Continuous batching on the real model: sampling in C, company, the prompt cache.

Every sampling parameter is checked for an effect that can only come from llama.cpp's
sampler chain (one-token cut-offs equal greedy, a ban, a forced token, fewer repeats), and
nothing here depends on timing: outputs are compared, never clocks.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import httpx
import llama_cpp
import pytest
import trio
from llama_cpp import _logger as llama_logger

from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

PROMPT = "The capital of France is"
STORY = "Once upon a time, in a small village by the sea, there lived"
OTHERS = (
    "The history of the Roman Empire begins with",
    "Here is a recipe for a simple tomato soup:",
    "In computer science, a hash table is",
)


class Vocab:
    """The bundled model's tokenizer, read in this process (vocabulary only, no weights)."""

    def __init__(self) -> None:
        llama_logger.set_verbose(False)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(
            str(bundled_model_path()).encode(), params
        )
        assert self._model
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buffer, len(buffer), False, False
        )
        return list(buffer[:n])

    def piece(self, token: int) -> str:
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
        return buffer.raw[:n].decode(errors="replace")

    def spelling(self, text: str) -> list[int]:
        """Every token whose piece is `text` (tokenizing a piece need not give its token)."""
        n_tokens = llama_cpp.llama_vocab_n_tokens(self._vocab)
        return [token for token in range(n_tokens) if self.piece(token) == text]

    def close(self) -> None:
        llama_cpp.llama_model_free(self._model)


@pytest.fixture(scope="module")
def vocab() -> Iterator[Vocab]:
    v = Vocab()
    yield v
    v.close()


def complete(http: httpx.Client, prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def text_of(http: httpx.Client, prompt: str, max_tokens: int, **extra: Any) -> str:
    return str(complete(http, prompt, max_tokens, **extra)["choices"][0]["text"])


@pytest.mark.parametrize("cut", [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}])
@pytest.mark.compares_texts
@pytest.mark.behavior("INF-007")
def test_a_cut_to_one_candidate_samples_like_greedy(
    exact_http: httpx.Client, cut: dict[str, Any]
) -> None:
    """Promise: exact mode, a request's tokens do not depend on what the slot's cache held
    (docs/API.md, "Same request, same text"), so the greedy and the hot request see the same
    logits, and a cut to the likeliest candidate leaves the seed nothing to choose."""
    # Eight tokens (no end-of-generation before): at this temperature over the whole
    # vocabulary, a cut that let more than one candidate through would leave greedy at the
    # first token or so.
    greedy = text_of(exact_http, STORY, 8, ignore_eos=True)
    hot = text_of(exact_http, STORY, 8, temperature=1.5, seed=7, ignore_eos=True, **cut)
    assert hot == greedy


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-008")
def test_a_seed_repeats_and_seeds_differ(exact_http: httpx.Client) -> None:
    """Promise: exact mode, the same request and seed give the same tokens whatever the
    slot's cache held (docs/API.md, "Same request, same text"); four seeds over the whole
    vocabulary, twelve tokens each, do not all draw alike."""

    whole = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "ignore_eos": True}

    def sample(seed: int) -> str:
        return text_of(exact_http, STORY, 12, seed=seed, **whole)

    first = sample(11)
    assert sample(11) == first
    assert len({first, *(sample(seed) for seed in (12, 13, 14))}) > 1


@pytest.mark.behavior("INF-009")
def test_logit_bias_bans_and_forces_tokens(http: httpx.Client, vocab: Vocab) -> None:
    """The greedy first token, banned, is not the first token any more (whatever the logits
    are, so nothing here compares two replies); a token forced is the only one written."""
    first = text_of(http, PROMPT, 1, ignore_eos=True)
    tokens = vocab.spelling(first)
    assert first and tokens, first
    reply = complete(http, PROMPT, 4, logprobs=1, logit_bias=dict.fromkeys(map(str, tokens), -100))
    assert reply["choices"][0]["logprobs"]["tokens"][0] != first
    london = vocab.tokenize(" London")[0]
    forced = text_of(http, PROMPT, 3, logit_bias={str(london): 100})
    assert forced == vocab.piece(london) * 3


@pytest.mark.parametrize(
    "penalty",
    [{"repeat_penalty": 2.0}, {"frequency_penalty": 2.0}, {"presence_penalty": 2.0}],
)
@pytest.mark.compares_texts
@pytest.mark.behavior("INF-007")
def test_penalties_cut_repetition(http: httpx.Client, penalty: dict[str, Any]) -> None:
    """Promise: none; the replies are compared only by how often they say "apple". Greedy
    says it in all 16 tokens (on this AVX-512 build each ahead of the next candidate by 1.2
    or more in logprob, where kernels' rounding moves logits by up to about 0.6,
    docs/PERFORMANCE.md), and each penalty of 2 leaves none."""
    prompt = "apple apple apple apple apple apple apple apple apple apple"
    plain = text_of(http, prompt, 16)
    penalised = text_of(http, prompt, 16, **penalty)
    assert penalised.count("apple") < plain.count("apple")


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-027")
def test_a_repeated_prompt_comes_from_the_cache(http: httpx.Client) -> None:
    """Promise: fast mode, the same request repeats its tokens when it meets the same state
    (docs/API.md, "Same request, same text"): the second and the third request both reuse
    the cells the first decoded, in the same slot, alone. The first, decoded whole, met
    another state: its text is not compared."""
    prompt = f"{STORY} a fisherman and his three daughters. Every morning"
    first = complete(http, prompt, 12)
    again = complete(http, prompt, 12)
    third = complete(http, prompt, 12)
    assert third["choices"][0]["text"] == again["choices"][0]["text"]
    usage = again["usage"]
    # Everything but the last prompt token, whose logits start the reply.
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    assert third["usage"] == usage
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"] - 1


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-027")
def test_a_cancelled_stream_leaves_correct_cells_behind(http: httpx.Client) -> None:
    """Promise: fast mode, the same request repeats its tokens when it meets the same state
    (docs/API.md, "Same request, same text"): the reference is read from the cache as the
    stream is, in the same slot, alone. The continuation is held to the same: it reads the
    cells the stream left and decodes its one new token alone, as the reference decoded each
    of its tokens after the same cells."""
    prompt = "The first ten prime numbers are"
    text_of(http, prompt, 24, ignore_eos=True)  # the cells every request below reuses
    reference = text_of(http, prompt, 24, ignore_eos=True)
    streamed = ""
    body = {"prompt": prompt, "max_tokens": 500, "temperature": 0, "ignore_eos": True}
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                streamed += httpx.Response(200, content=line[6:]).json()["choices"][0]["text"]
            if len(streamed) >= 12:
                break  # leaving the block disconnects: the worker cancels mid-stream
    assert reference.startswith(streamed)
    # The slot still holds the prompt and the tokens it decoded before the cancel: a prompt
    # that extends into them reuses them, and continues exactly as the reference does.
    reply = complete(http, prompt + streamed, 6, ignore_eos=True)
    assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] > len(prompt.split())
    assert reference.startswith(streamed + reply["choices"][0]["text"])


async def _stream(
    client: httpx.AsyncClient,
    prompt: str,
    max_tokens: int,
    streaming: trio.Event | None = None,
    **extra: Any,
) -> tuple[str, str | None, int]:
    """(text, finish_reason, completion_tokens) of one streamed completion.

    `streaming` is set once the first text has arrived: the request is past its prompt.
    """
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    text, finish, tokens = "", None, 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = httpx.Response(200, content=line[6:]).json()
            if chunk["choices"]:
                text += chunk["choices"][0]["text"]
                finish = chunk["choices"][0]["finish_reason"] or finish
                if text and streaming is not None:
                    streaming.set()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return text, finish, tokens


async def _together(
    url: str, requests: list[tuple[str, dict[str, Any]]], *, first_joins_late: bool = False
) -> list[str]:
    """The texts of `requests` run at once (32 tokens each). With `first_joins_late`, the
    first request starts only once every other one is streaming."""
    results: list[str] = [""] * len(requests)
    streaming = [trio.Event() for _ in requests]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(i: int, prompt: str, extra: dict[str, Any]) -> None:
            if first_joins_late and i == 0:
                for event in streaming[1:]:
                    await event.wait()
            tokens = 96 if first_joins_late and i > 0 else 32
            text, finish, n = await _stream(
                client, prompt, tokens, streaming[i], ignore_eos=True, **extra
            )
            assert (finish, n) == ("length", tokens)
            results[i] = text

        async with trio.open_nursery() as nursery:
            for i, (prompt, extra) in enumerate(requests):
                nursery.start_soon(one, i, prompt, extra)
    return results


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-025", "RES-001")
async def test_four_concurrent_streams_all_complete(exact_worker: WorkerProcess) -> None:
    """Promise: none needed: four different prompts side by side do not continue alike,
    which a stream fed another's tokens would."""
    with trio.fail_after(300):
        texts = await _together(
            exact_worker.url, [(p, {"temperature": 0}) for p in (STORY, *OTHERS)]
        )
    assert all(texts) and len(set(texts)) == 4


@pytest.mark.parametrize("late", [False, True], ids=["together", "joining-late"])
@pytest.mark.parametrize(
    "sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 5}], ids=["greedy", "seeded"]
)
@pytest.mark.compares_texts
@pytest.mark.behavior("INF-026")
async def test_same_answer_alone_or_beside_three_others(
    exact_worker: WorkerProcess, sampling: dict[str, Any], late: bool
) -> None:
    """Promise: exact mode, a request's tokens do not depend on who shares its steps or on
    what the slot's cache held (docs/API.md, "Same request, same text"): alone, beside three
    others, or joining them late."""
    companions = [(p, {"temperature": 0.7}) for p in OTHERS]
    with trio.fail_after(300):
        (alone,) = await _together(exact_worker.url, [(STORY, sampling)])
        company = await _together(
            exact_worker.url, [(STORY, sampling), *companions], first_joins_late=late
        )
    assert company[0] == alone


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-064")
def test_with_batch_invariant_a_seed_repeats_from_a_cold_or_a_warm_cache(
    exact_worker: WorkerProcess,
) -> None:
    """Promise: exact mode, a seeded request's text does not depend on what its slot's cache
    held (docs/API.md, "Same request, same text"): the same text whether the prompt is
    decoded whole (cold) or read from the slot's cache as far as whole 64-token chunks
    decoded it (warm). Several prompts and seeds, so one lucky sample cannot pass it."""
    opening = " ".join([STORY, *OTHERS] * 2)  # over one 64-token chunk: the warm run reuses it
    with httpx.Client(base_url=exact_worker.url, timeout=120) as http:
        for n, prompt in enumerate(OTHERS):
            unique = f"Take {n}. {opening} {prompt}"  # a new start: no slot holds its prefix
            seeded = {"temperature": 0.9, "seed": 40 + n}
            cold = complete(http, unique, 24, **seeded)
            warm = complete(http, unique, 24, **seeded)
            cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
            assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
            assert cached == (warm["usage"]["prompt_tokens"] - 1) // 64 * 64 > 0
            assert warm["choices"][0]["text"] == cold["choices"][0]["text"], unique

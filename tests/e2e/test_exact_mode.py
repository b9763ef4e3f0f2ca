"""The exact mode's promise (`--batch-invariant`) on the real model, for any reuse of the cache.

The promise (docs/API.md, `seed`): the same request with the same seed (or greedy) gets the
same tokens whatever its slot's cache held, whoever shares its steps, and whether it joins
while other prompts are being decoded. llama.cpp's CPU kernels pick their path by a batch's
shape, so the engine decodes a prompt in chunks whose boundaries depend only on positions
(multiples of `EXACT_CHUNK`), reuses a cached prefix only as far as such chunks decoded it,
and decodes streams apart from prompts. The first tests pin that shape through the engine;
the others compare texts, which is what the shape is for: they run under every kernel build
of `make matrix`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import llama_cpp
import pytest
import trio

from bench.bursts import counter
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import EXACT_CHUNK, TILED_MATMUL, LlamaEngine, tiled_matmul_off
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams
from llm_worker_rbee.testing.process import WorkerProcess

ACCEPTED = "llm_worker:spec_decode_num_accepted_tokens_total"
DRAFTED = "llm_worker:spec_decode_num_draft_tokens_total"

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0)

# A first turn long enough for two whole chunks and a part of a third, then six different
# second turns that extend it (a multi-turn conversation's next prompt).
FIRST_TURN = (
    "The lighthouse keeper kept a log of every ship that passed the point. In the spring "
    "there were fishing boats from the northern villages, heavy with nets, and in the summer "
    "the tall cargo ships that carried grain and timber to the cities along the coast. Each "
    "evening he climbed the hundred and twelve steps, trimmed the wick, polished the great "
    "lens and wrote the weather into the log: the wind, the swell, the colour of the sky at "
    "dusk. On Sundays he walked down to the village for bread, coffee, lamp oil and the "
    "newspaper, which he read from the first page to the last while the kettle boiled on "
    "the stove. Nobody had read the log in forty years, but he wrote it all the same, because"
)
SECOND_TURNS = (
    " One day in the year 1900, a strange vessel appeared",
    " The next morning, a letter arrived from the harbour master",
    " His daughter, who had moved to the city, wrote to say",
    " During the great storm of that winter, the lamp",
    " Years later, a historian found the log and noticed",
    " On the last page, in a hand that was not his own,",
)
SEEDED = {"temperature": 0.9, "seed": 7}


def record_decodes(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[int, int]]]:
    """Each llama_decode from now on, as its (sequence id, position) rows."""
    decoded: list[list[tuple[int, int]]] = []
    real_decode = llama_cpp.llama_decode

    def recording(ctx: Any, batch: Any) -> int:
        decoded.append([(batch.seq_id[i][0], batch.pos[i]) for i in range(batch.n_tokens)])
        return int(real_decode(ctx, batch))

    monkeypatch.setattr(llama_cpp, "llama_decode", recording)
    return decoded


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    settings = Settings(
        backend="cpu", ctx_size=2048, slots=2, batch_size=512, threads=1, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    yield engine
    engine.close()


def run_to_end(engine: LlamaEngine, seq_id: int, prompt: list[int], tokens: int) -> int:
    """Admits `prompt` in `seq_id`, steps until `tokens` are sampled (the first comes with
    the prompt's last chunk, each later one from a decode of one row), ends the sequence;
    returns how many prompt tokens came from the cache."""
    reused = engine.admit(seq_id, prompt, GREEDY)
    sampled = 0
    while sampled < tokens:
        sampled += len(engine.step())
    engine.cancel(seq_id)
    return reused


def chunks(decoded: list[list[tuple[int, int]]], seq_id: int) -> list[tuple[int, int]]:
    """The (first, last) positions of `seq_id`'s rows in each decode that carried it."""
    spans = []
    for rows in decoded:
        positions = [pos for seq, pos in rows if seq == seq_id]
        if positions:
            spans.append((positions[0], positions[-1]))
    return spans


@pytest.mark.behavior("INF-065")
def test_prompt_chunks_end_only_on_fixed_boundaries(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = engine.tokenize(FIRST_TURN, add_special=True)
    assert 2 * EXACT_CHUNK < len(prompt) < 3 * EXACT_CHUNK
    decoded = record_decodes(monkeypatch)
    assert run_to_end(engine, 0, prompt, 1) == 0
    chunk = EXACT_CHUNK
    assert chunks(decoded, 0) == [(0, chunk - 1), (chunk, 2 * chunk - 1),
                                         (2 * chunk, len(prompt) - 1)]  # fmt: skip


@pytest.mark.behavior("INF-065")
def test_a_cached_prefix_is_reused_only_as_far_as_whole_chunks_decoded_it(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot holds the first turn and 8 generated tokens; the second turn shares all of
    them and more, but only the two whole chunks are reused: the third chunk of the first
    turn was a part chunk and the generated tokens were decoded one row at a time, where a
    cold prompt decodes them in a 64-row chunk."""
    first = engine.tokenize(FIRST_TURN, add_special=True)
    run_to_end(engine, 1, first, 8)
    held = engine.prompt_cache().held[1]
    assert len(held) == 2 * EXACT_CHUNK  # what the scheduler is offered: the reusable cells
    second = engine.tokenize(FIRST_TURN + SECOND_TURNS[0], add_special=True)
    decoded = record_decodes(monkeypatch)
    assert run_to_end(engine, 1, second, 1) == 2 * EXACT_CHUNK
    assert chunks(decoded, 1) == [(2 * EXACT_CHUNK, len(second) - 1)]


def complete(http: httpx.Client, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": 24, "ignore_eos": True, **SEEDED, **extra}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    assert reply["usage"]["completion_tokens"] == 24
    return reply


def cached(reply: dict[str, Any]) -> int:
    return int(reply["usage"]["prompt_tokens_details"]["cached_tokens"])


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-064", "INF-065")
def test_a_second_turn_is_the_same_cold_or_extending_the_cached_first(
    exact_worker: WorkerProcess,
) -> None:
    """Promise: exact mode, a seeded request's tokens do not depend on what its slot's cache
    held (docs/API.md, `seed`). Six second turns, each sent cold (a new start no slot holds),
    then its first turn, then the second turn again, which now reuses the first turn's cells
    (the multi-turn case): the same text."""
    with httpx.Client(base_url=exact_worker.url, timeout=120) as http:
        for n, second in enumerate(SECOND_TURNS):
            first = f"Log {n}. {FIRST_TURN}"  # a new start: no slot holds its prefix
            cold = complete(http, first + second)
            complete(http, first, seed=100 + n)
            warm = complete(http, first + second)
            assert cached(cold) == 0
            assert cached(warm) > 0 and cached(warm) % EXACT_CHUNK == 0
            assert warm["choices"][0]["text"] == cold["choices"][0]["text"], second


async def stream(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> str:
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, **SEEDED}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-026", "INF-065")
async def test_a_second_turn_is_the_same_alone_beside_streams_or_joining_prefills(
    exact_worker: WorkerProcess,
) -> None:
    """Promise: exact mode, a seeded request's tokens do not depend on who shares its steps
    or on prompts decoded while it runs (docs/API.md, `seed`). A second turn alone, then
    beside three streams, then sent while three long prompts are being decoded (more than
    one step's --batch-size of them): the same text every time."""
    prompt = f"Log company. {FIRST_TURN}{SECOND_TURNS[1]}"
    long_prompt = " ".join([FIRST_TURN] * 3)  # about 400 tokens each
    async with httpx.AsyncClient(base_url=exact_worker.url, timeout=120) as client:
        with trio.fail_after(300):
            alone = await stream(client, prompt, 24)
            results: dict[str, str] = {}

            async def run(key: str, text: str, tokens: int) -> None:
                results[key] = await stream(client, text, tokens)

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(run, f"stream {i}", f"Ship {i} sails to", 48)
                nursery.start_soon(run, "beside", prompt, 24)
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(run, f"long {i}", f"Copy {i}. {long_prompt}", 4)
                nursery.start_soon(run, "joining", prompt, 24)
    assert results["beside"] == alone
    assert results["joining"] == alone


@pytest.fixture(scope="module")
def eight_slot_worker() -> Iterator[WorkerProcess]:
    """The exact mode with 8 slots: a step of 8 streams is where llama.cpp's CPU backend
    multiplies K-quant weights in tiles unless the worker turns that off (see
    LlamaEngine.load). One thread: threaded_worker covers what two change."""
    args = [*("--slots", "8", "--ctx-size", "4096", "--threads", "1"), "--batch-invariant"]
    process = WorkerProcess(args).start()
    yield process
    process.stop()


async def _logprobs(client: httpx.AsyncClient, prompt: str, **extra: Any) -> Any:
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "logprobs": 0, **extra}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["logprobs"]


async def _beside(client: httpx.AsyncClient, prompt: str, others: int, **extra: Any) -> Any:
    """`prompt`'s logprobs, sent once `others` streams are running (never drafting, and ended
    when it is done, so none is ever alone while it runs)."""
    started = [trio.Event() for _ in range(others)]

    async def companion(i: int) -> None:
        body = {
            "prompt": f"Ship {i} sails to",
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
            "speculative.n_max": 0,
        }
        async with client.stream("POST", "/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    started[i].set()

    beside: Any = None
    async with trio.open_nursery() as nursery:
        for i in range(others):
            nursery.start_soon(companion, i)
        for event in started:
            await event.wait()
        beside = await _logprobs(client, prompt, **extra)
        nursery.cancel_scope.cancel()
    return beside


@pytest.fixture(scope="module")
def threaded_worker() -> Iterator[WorkerProcess]:
    """The exact mode with two threads: llama.cpp splits one lone row's attention over long
    contexts between its threads (see LlamaEngine._beside_lone), which one thread never does.
    A process of its own: ggml reads its tiled-matmul switch once per process, so an engine
    loaded in the tests' process after a fast-mode one would keep the tiled kernel."""
    args = [*("--slots", "2", "--ctx-size", "2048", "--threads", "2"), "--batch-invariant"]
    process = WorkerProcess(args).start()
    yield process
    process.stop()


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-026")
async def test_a_long_context_stream_is_the_same_alone_or_beside_another(
    threaded_worker: WorkerProcess,
) -> None:
    """Promise: exact mode, a request's tokens and logprobs do not depend on who shares its
    steps (docs/API.md, "Same request, same text"), past 256 cells of context and with more
    than one thread: there llama.cpp decodes a lone row's attention in per-thread parts of
    the cache (its split-KV path) and rows in company whole, unless the lone row has a
    stand-in beside it. Alone without drafts (every step a lone row), alone with them, and
    beside a companion, where the exact mode does not draft."""
    prompt = f"{FIRST_TURN} {FIRST_TURN}"
    url = threaded_worker.url
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        with trio.fail_after(300):
            reply = await client.post("/v1/tokenize", json={"content": prompt})
            assert reply.json()["count"] > 256
            alone = await _logprobs(client, prompt, **{"speculative.n_max": 0})  # lone rows
            before = counter(url, DRAFTED)
            drafted = await _logprobs(client, prompt)
            assert counter(url, DRAFTED) > before  # alone, it drafts (the prompt repeats)
            before = counter(url, DRAFTED)
            beside = await _beside(client, prompt, 1)
            assert counter(url, DRAFTED) == before  # in company, nobody drafts
    assert drafted == alone
    assert beside == alone


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-026")
async def test_a_stream_is_the_same_alone_or_beside_seven_others(
    eight_slot_worker: WorkerProcess,
) -> None:
    """Promise: exact mode, a request's tokens and logprobs do not depend on who shares its
    steps (docs/API.md, "Same request, same text"), with 8 streams at once: alone, then
    joining seven streams already running (8 rows a step)."""
    prompt = f"{FIRST_TURN} {FIRST_TURN}"
    async with httpx.AsyncClient(base_url=eight_slot_worker.url, timeout=120) as client:
        with trio.fail_after(300):
            alone = await _logprobs(client, prompt, **{"speculative.n_max": 0})
            beside = await _beside(client, prompt, 7, **{"speculative.n_max": 0})
    assert beside == alone


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-026", "INF-068")
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.9, "seed": 11}])
async def test_a_stream_alone_drafts_and_gets_the_same_tokens_as_without_or_in_company(
    eight_slot_worker: WorkerProcess, sampling: dict[str, Any]
) -> None:
    """Promise: exact mode, n-gram drafts change how many tokens a step gives, never which
    (docs/API.md, "Same request, same text"): a request that repeats its prompt, alone with
    drafts (the counters show them kept), alone without (`speculative.n_max` 0), and beside
    seven streams (no drafts there): the same tokens and logprobs, greedy and seeded."""
    prompt = f"{FIRST_TURN}\n\nThe same, word for word:\n\n{FIRST_TURN[:200]}"
    url = eight_slot_worker.url
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        with trio.fail_after(300):
            before = counter(url, ACCEPTED)
            drafted = await _logprobs(client, prompt, **sampling)
            assert counter(url, ACCEPTED) > before
            plain = await _logprobs(client, prompt, **sampling, **{"speculative.n_max": 0})
            beside = await _beside(client, prompt, 7, **sampling)
    assert drafted == plain
    assert beside == plain


@pytest.mark.behavior("INF-026")
def test_the_tiled_matmul_is_off_while_an_exact_engine_loads_and_put_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ggml reads the switch at the first decode; the variable must not outlive the load, or
    every process the worker's process starts later would inherit it."""
    for before in (None, "1"):
        if before is None:
            monkeypatch.delenv(TILED_MATMUL, raising=False)
        else:
            monkeypatch.setenv(TILED_MATMUL, before)
        with tiled_matmul_off(True):
            assert os.environ[TILED_MATMUL] == "0"
        assert os.environ.get(TILED_MATMUL) == before
        with tiled_matmul_off(False):  # the fast mode leaves it as it is
            assert os.environ.get(TILED_MATMUL) == before

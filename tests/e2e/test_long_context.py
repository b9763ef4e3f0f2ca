"""The fast mode's shared KV pool on the real model, with the default settings.

With no `--ctx-size` the worker takes the model's trained context (32k for the bundled
Gemma 3 270M) as one pool every slot draws from, so a single request may use all of it; a
prompt beyond the pool is refused with both numbers; and while a long request runs, others
still get slots and cells. Nothing here is timed: only what finished before what.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

TRAINED = 32768  # the bundled model's n_ctx_train


@pytest.fixture(scope="module")
def default_worker() -> Iterator[WorkerProcess]:
    """`serve` with nothing but a port: the defaults under test."""
    process = WorkerProcess([]).start(timeout=180)
    yield process
    process.stop()


@pytest.fixture
def http(default_worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=default_worker.url, timeout=300) as client:
        yield client


def long_prompt(topic: str, words: int) -> str:
    return f"Notes on {topic}: " + " ".join(f"{topic}{i % 10}" for i in range(words))


def count_tokens(http: httpx.Client, text: str) -> int:
    return int(http.post("/v1/tokenize", json={"content": text}).json()["count"])


@pytest.mark.behavior("CFG-035", "RES-022")
def test_the_default_context_is_the_trained_one_shared_by_every_slot(
    http: httpx.Client,
) -> None:
    meta = http.get("/v1/models").json()["data"][0]["meta"]
    assert (meta["n_ctx"], meta["n_ctx_per_slot"], meta["kv_shared"]) == (TRAINED, TRAINED, True)
    assert meta["slots"] == 4


@pytest.mark.behavior("RES-022")
def test_a_six_thousand_token_prompt_is_served(http: httpx.Client) -> None:
    prompt = long_prompt("river", 3000)
    tokens = count_tokens(http, prompt)
    assert 5500 < tokens < 7000
    body = {"prompt": prompt, "max_tokens": 4, "ignore_eos": True}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (tokens, 4)


@pytest.mark.behavior("INF-045")
def test_a_prompt_beyond_the_pool_names_both_numbers(http: httpx.Client) -> None:
    prompt = long_prompt("cloud", 17000)
    tokens = count_tokens(http, prompt)
    assert tokens > TRAINED
    response = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 4})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")
    assert error["message"].startswith(
        f"This model's maximum context length is {TRAINED} tokens. "
        f"However, your prompt resulted in {tokens} tokens."
    )


async def _complete(
    client: httpx.AsyncClient, prompt: str, max_tokens: int, done: list[str], name: str
) -> dict[str, Any]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    # No drafts: the long prompt repeats one word, and drafts of it would finish its 64
    # tokens in a few steps, before the short ones' 12 (the order the test reads).
    body["speculative.n_max"] = 0
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    done.append(name)
    reply: dict[str, Any] = response.json()
    return reply


@pytest.mark.behavior("RES-020", "RES-022")
async def test_while_a_long_request_runs_others_get_slots_and_cells(
    default_worker: WorkerProcess,
) -> None:
    done: list[str] = []
    replies: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=default_worker.url, timeout=300) as client:

        async def run(name: str, prompt: str, max_tokens: int) -> None:
            replies[name] = await _complete(client, prompt, max_tokens, done, name)

        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                # ~2,000 prompt tokens: several steps of prompt chunks, then 64 tokens.
                nursery.start_soon(run, "long", long_prompt("forest", 1000), 64)
                # Once the long one holds a slot (its prompt is being decoded), three more.
                while not any(s["busy"] for s in (await client.get("/v1/slots")).json()["slots"]):
                    await trio.lowlevel.checkpoint()
                for i in range(3):
                    nursery.start_soon(run, f"short{i}", f"Question {i}: why is the sky", 12)
    assert done[-1] == "long"  # the three short ones ran beside it, not after it
    assert all(replies[f"short{i}"]["usage"]["completion_tokens"] == 12 for i in range(3))
    assert replies["long"]["usage"]["completion_tokens"] == 64

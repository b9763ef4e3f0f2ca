"""What client libraries trip on (#16), against the real worker and the bundled model, through
the libraries themselves: litellm and LangChain recognise the context overflow, the openai
SDK retrieves the model and its default retries get a burst through, llama-server's
`grammar` and `json_schema` constrain the real sampler, and token-array prompts."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import litellm  # LITELLM_LOCAL_MODEL_COST_MAP is set in conftest.py, before this import
import openai
import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_openai import ChatOpenAI

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

# Beyond the 2048-token pool a request may use on the shared worker (--ctx-size 2048).
TOO_LONG = "Tell me about the weather. " * 400


# litellm builds pydantic schemas of its own TypedDicts on first use, and pydantic warns
# about their ReadOnly items: litellm's affair, not this worker's.
@pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning")
@pytest.mark.behavior("ERR-030")
def test_litellm_maps_the_overflow_to_context_window_exceeded(
    worker_url: str, model_id: str
) -> None:
    with pytest.raises(litellm.ContextWindowExceededError) as caught:
        litellm.completion(
            model=f"openai/{model_id}",
            api_base=f"{worker_url}/v1",
            api_key="unused",
            messages=[{"role": "user", "content": TOO_LONG}],
            max_tokens=4,
            num_retries=0,
        )
    assert "maximum context length is 2048 tokens" in str(caught.value)


@pytest.mark.behavior("ERR-030")
def test_langchain_raises_its_context_overflow_error(worker_url: str, model_id: str) -> None:
    chat = ChatOpenAI(
        model=model_id, base_url=f"{worker_url}/v1", api_key="unused", max_retries=0, max_tokens=4
    )
    with pytest.raises(ContextOverflowError):
        chat.invoke(TOO_LONG)


@pytest.mark.behavior("HTTP-050")
def test_the_sdk_retrieves_the_model_by_id_and_alias(client: openai.OpenAI, model_id: str) -> None:
    model = client.models.retrieve(model_id)
    assert (model.id, model.object, model.owned_by) == (model_id, "model", "llm-worker-rbee")
    assert client.models.retrieve("my-alias").id == "my-alias"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


@pytest.mark.behavior("OAI-031")
def test_grammar_and_json_schema_constrain_the_real_sampler(
    http: httpx.Client, model_id: str
) -> None:
    grammar = 'root ::= ("yes" | "no") "."'
    texts = set()
    for seed in range(2):
        body = {"prompt": "Is the sky green?", "grammar": grammar, "max_tokens": 4, "seed": seed}
        reply = http.post("/v1/completions", json={**body, "temperature": 1.0})
        assert reply.status_code == 200, reply.text
        texts.add(reply.json()["choices"][0]["text"])
    assert texts <= {"yes.", "no."}
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "maxLength": 8}},
        "required": ["colour"],
    }
    reply = http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Name a colour as JSON."}],
            "json_schema": schema,
            # The longest object the grammar accepts is 66 characters ("\u00e9" is one of
            # the 8): room for it whatever the model writes.
            "max_tokens": 72,
            "temperature": 0,
        },
    )
    assert reply.status_code == 200, reply.text
    assert set(json.loads(reply.json()["choices"][0]["message"]["content"])) == {"colour"}
    bad = http.post("/v1/inference", json={"prompt": "hi", "grammar": 'root ::= "unclosed'})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grammar"
    assert http.get("/health").status_code == 200


@pytest.mark.compares_texts
@pytest.mark.behavior("OAI-030")
def test_token_ids_prompt_as_the_text_does(exact_http: httpx.Client) -> None:
    """Promise: exact mode, a request's tokens do not depend on what the slot's cache held
    or on who shares its steps (docs/API.md, "Same request, same text"): the prompt as text,
    as token ids, and twice in one request get the same reply."""
    http = exact_http
    tokens = http.post("/v1/tokenize", json={"content": "The capital of France is"}).json()
    sampling = {"max_tokens": 3, "temperature": 0, "ignore_eos": True}
    by_text = http.post("/v1/completions", json={"prompt": "The capital of France is", **sampling})
    by_ids = http.post("/v1/completions", json={"prompt": tokens["tokens"], **sampling})
    both = http.post("/v1/completions", json={"prompt": [tokens["tokens"]] * 2, **sampling})
    text = by_text.json()["choices"][0]["text"]
    assert text and by_ids.json()["choices"][0]["text"] == text
    assert [c["text"] for c in both.json()["choices"]] == [text, text]
    vocabulary = http.get("/v1/models").json()["data"][0]["meta"]["n_vocab"]
    outside = http.post("/v1/completions", json={"prompt": [2, vocabulary]})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "prompt"


def _rejected(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    counts = re.findall(
        r'^llm_worker:request_rejected_total\{code="all_slots_busy"\} (\S+)$', text, re.M
    )
    return float(counts[0]) if counts else 0.0


@pytest.mark.behavior("RES-014", "OAI-005")
def test_24_streams_on_4_slots_all_complete_on_the_sdks_default_retries(
    exact_worker: WorkerProcess,
) -> None:
    """Four slots and a queue of twelve (conftest's EXACT_ARGS): 16 of a burst of 24 get in
    at once, and the retries of the other 8 land right when the estimate is off by up to half
    either way."""
    # The SDK's defaults: two retries, each after what Retry-After says.
    client = openai.OpenAI(base_url=f"{exact_worker.url}/v1", api_key="unused", timeout=120)
    assert client.max_retries == 2

    model = client.models.list().data[0].id

    def stream(i: int) -> str:
        chunks = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        return str(finish[-1])

    # A warm-up gives the scheduler a recent job time to estimate Retry-After from; the
    # first wave of a fresh worker is several times slower than the rest, so three waves.
    with ThreadPoolExecutor(4) as pool:
        assert len(list(pool.map(stream, range(12)))) == 12
    before = _rejected(exact_worker.url)
    with ThreadPoolExecutor(24) as pool:
        finished = list(pool.map(stream, range(24)))
    assert len(finished) == 24 and set(finished) <= {"stop", "length"}
    # The queue did overflow (4 running and 12 waiting at most): the retries carried the rest.
    assert _rejected(exact_worker.url) > before

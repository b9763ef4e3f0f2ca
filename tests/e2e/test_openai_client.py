"""The official openai client against the real worker and the real bundled model."""

from __future__ import annotations

import gc

import httpx
import openai
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

PROMPT = "The capital of France is"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Name a colour."}]
NO_END = {"ignore_eos": True}  # a reply that runs to max_tokens, wherever the model would end
# The comparisons of two replies below run on the exact-mode worker: its promise (the same
# request and seed give the same tokens whatever the slot's cache held) is the one they rely
# on; the fast mode makes none across cache states (docs/API.md, "Same request, same text").


@pytest.mark.behavior("HTTP-001", "HTTP-005")
def test_health_and_models(http: httpx.Client, model_id: str) -> None:
    assert http.get("/health").json() == {"status": "ok", "state": "ready"}
    data = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["gemma-3-270m-q4_k_m"] == [model_id]
    assert data[0]["meta"]["n_ctx"] == 2048 and data[0]["meta"]["slots"] == 2


@pytest.mark.behavior("HTTP-010", "INF-020", "OAI-001", "OAI-005")
def test_chat_completion(client: openai.OpenAI, model_id: str) -> None:
    reply = client.chat.completions.create(
        model=model_id,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == model_id
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    # Possibly empty: the transcript's next turn ends a reply, and may be what comes first.
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.compares_texts
@pytest.mark.behavior("SSE-004")
def test_chat_stream_matches_the_whole_reply(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the stream spells the whole reply."""
    client = exact_client
    kwargs = {"model": model_id, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)


@pytest.mark.behavior("HTTP-009", "INF-019", "INF-020")
def test_completion_stops_at_max_tokens(client: openai.OpenAI, model_id: str) -> None:
    reply = client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=8, temperature=0, extra_body=NO_END
    )
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.choices[0].text


@pytest.mark.compares_texts
@pytest.mark.behavior("SSE-005")
def test_completion_stream_with_usage(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the stream spells the whole reply."""
    client = exact_client
    whole = client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=10, temperature=0, extra_body=NO_END
    )
    chunks = list(
        client.completions.create(
            model=model_id,
            prompt=PROMPT,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_END,
        )
    )
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 10
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "length"


@pytest.mark.behavior("INF-024", "ERR-006")
def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=1)
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.behavior("OAI-005")
def test_bad_parameter_is_400_naming_it(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, temperature=5)
    assert caught.value.body["param"] == "temperature"  # type: ignore[index]


@pytest.mark.behavior("INF-021", "INF-022")
def test_n_gives_that_many_choices(client: openai.OpenAI, model_id: str) -> None:
    reply = client.chat.completions.create(
        model=model_id,
        messages=MESSAGES,
        max_tokens=6,
        n=2,
        temperature=1.0,
        # Six tokens each: no end-of-generation, and no stop (the transcript's next turn)
        # looked for, before that.
        extra_body={"min_tokens": 6},  # type: ignore[arg-type]
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(isinstance(c.message.content, str) for c in reply.choices)
    single = client.chat.completions.create(
        model=model_id,
        messages=MESSAGES,
        max_tokens=1,  # type: ignore[arg-type]
    )
    # the shared prompt counts once; both completions count
    assert reply.usage is not None and single.usage is not None
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    assert reply.usage.completion_tokens == 12


@pytest.mark.behavior("INF-022", "INF-023")
def test_prompt_list_gives_one_choice_per_prompt_and_echo(
    client: openai.OpenAI, model_id: str
) -> None:
    prompts = ["Roses are", "The sky is"]
    reply = client.completions.create(
        model=model_id, prompt=prompts, max_tokens=3, temperature=0, echo=True, extra_body=NO_END
    )
    assert [c.index for c in reply.choices] == [0, 1]
    for prompt, choice in zip(prompts, reply.choices, strict=True):
        assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-016")
def test_stop_string_cuts_the_text(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the request with a stop string writes the
    whole reply's tokens up to the stop."""
    client = exact_client
    kwargs: dict[str, object] = {
        "model": model_id,
        "prompt": PROMPT,
        "max_tokens": 12,
        "temperature": 0,
        "extra_body": NO_END,
    }
    whole = client.completions.create(**kwargs)  # type: ignore[call-overload]
    text = whole.choices[0].text
    cut_at = text[len(text) // 3 : len(text) * 2 // 3]  # its middle third, whatever it says
    stopped = client.completions.create(stop=[cut_at], **kwargs)  # type: ignore[call-overload]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(cut_at)]
    assert cut_at not in stopped.choices[0].text


@pytest.mark.compares_texts
@pytest.mark.behavior("INF-008")
def test_seed_repeats_a_sampled_reply(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request and seed give the same tokens whatever the
    slot's cache held (docs/API.md, "Same request, same text")."""
    client = exact_client
    kwargs: dict[str, object] = {
        "model": model_id,
        "prompt": PROMPT,
        "max_tokens": 12,
        "temperature": 1.2,
        "seed": 1234,
    }
    first = client.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.completions.create(**kwargs)  # type: ignore[call-overload]
    assert first.choices[0].text == second.choices[0].text


@pytest.mark.behavior("INF-024")
def test_alias_is_accepted_as_the_model(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="my-alias", prompt=PROMPT, max_tokens=1, extra_body=NO_END
    )
    assert reply.choices[0].finish_reason == "length"


# The openai client's async SSE reader stops at [DONE] without closing httpx's byte
# iterator, which Python reports when it is collected; that is the client's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.compares_texts
@pytest.mark.behavior("SSE-005", "OAI-005")
async def test_async_client_stream_and_whole(exact_worker: WorkerProcess, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the stream spells the whole reply."""
    url = f"{exact_worker.url}/v1"
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    kwargs: dict[str, object] = {
        "model": model_id,
        "messages": MESSAGES,
        "max_completion_tokens": 8,
        "temperature": 0,
    }
    whole = await client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    stream = await client.chat.completions.create(stream=True, **kwargs)  # type: ignore[call-overload]
    async with stream:  # closes the underlying response even if iteration stops early
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == whole.choices[0].message.content
    await client.close()
    gc.collect()  # report the client's unclosed iterator here, under this test's filter

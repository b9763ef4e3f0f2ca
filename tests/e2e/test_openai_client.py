"""The official openai client against the real worker and the real bundled model."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.real_model

PROMPT = "The capital of France is"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Name a colour."}]


def test_health_and_models(http: httpx.Client, model_id: str) -> None:
    assert http.get("/health").json() == {"status": "ok", "state": "ready"}
    data = http.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["gemma-3-270m-q4_k_m"] == [model_id]
    assert data[0]["meta"]["n_ctx"] == 2048 and data[0]["meta"]["slots"] == 2


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
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_matches_the_whole_reply(client: openai.OpenAI, model_id: str) -> None:
    kwargs = {"model": model_id, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)


def test_completion_stops_at_max_tokens(client: openai.OpenAI, model_id: str) -> None:
    reply = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=8, temperature=0)
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.choices[0].text.strip()


def test_completion_stream_with_usage(client: openai.OpenAI, model_id: str) -> None:
    whole = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=10, temperature=0)
    chunks = list(
        client.completions.create(
            model=model_id,
            prompt=PROMPT,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 10
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == "length"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=1)
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_bad_parameter_is_400_naming_it(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=model_id, prompt=PROMPT, max_tokens=1, temperature=5)
    assert caught.value.body["param"] == "temperature"  # type: ignore[index]

"""response_format, logprobs and min_tokens through the official openai client, against the
real worker and the real bundled model (a base model: it seldom ends on its own)."""

from __future__ import annotations

import gc
import json
from typing import Any

import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.real_model

PROMPT = "The capital of France is"
GEMMA_EOS = 1  # the bundled model's <eos> token id
# A schema bounds every string (maxLength) and llama-cpp-python's converter an integer (16
# digits; it does not enforce minimum/maximum), and a JSON character is at most 6 ("\u00e9"):
# the longest object CITY_SCHEMA's grammar accepts is 356 characters, City's 215 (counted on
# the grammars), and a token is at least one character. So the budgets below always let the
# grammar end the reply, whatever the model writes.
CITY_TOKENS = 400
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population": {"type": "integer"},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}


class City(BaseModel):
    name: str = Field(max_length=24)
    population: int
    coastal: bool


def test_parse_gives_the_pydantic_model(client: openai.OpenAI, model_id: str) -> None:
    """The client sends City's strict json_schema; the grammar makes the reply parse."""
    reply = client.chat.completions.parse(
        model=model_id,
        messages=[{"role": "user", "content": "Describe a big city as JSON."}],
        response_format=City,
        max_completion_tokens=256,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert len(choice.message.parsed.name) <= 24


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_json_schema_reply_validates(
    client: openai.OpenAI, model_id: str, temperature: float
) -> None:
    reply = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Which city is the largest?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
        },
        max_tokens=CITY_TOKENS,
        temperature=temperature,
        seed=3,
    )
    content = reply.choices[0].message.content
    assert content is not None and reply.choices[0].finish_reason == "stop"
    jsonschema_rs.validate(CITY_SCHEMA, json.loads(content))


def test_json_object_completion_stream_parses(client: openai.OpenAI, model_id: str) -> None:
    """`json_object` bounds nothing (a string may run on for ever, and on some CPUs the
    greedy reply here does), so the reply either ends ("stop") as a whole JSON object, or is
    cut by max_tokens ("length") as the start of one: what the grammar promises either way."""
    chunks = list(
        client.completions.create(
            model=model_id,
            prompt="A JSON object with a person's name and age:",
            max_tokens=120,
            temperature=0,
            stream=True,
            extra_body={"response_format": {"type": "json_object"}},
        )
    )
    text = "".join(c.choices[0].text for c in chunks)
    finish = chunks[-1].choices[0].finish_reason
    if finish == "stop":
        assert isinstance(json.loads(text), dict), text
    else:
        assert finish == "length" and starts_a_json_object(text), text


# What ends the token a text was cut in: an open string (after a partial escape), a key's
# colon and value, a value after a comma or colon, a number's digit, a partial literal; then
# the open arrays and objects are closed.
STRING_ENDS = ('"', 'n"', '0"', '00"', '000"', '0000"')
VALUE_ENDS = ("", "null", ":null", '"":null', "0")
LITERAL_ENDS = ("rue", "ue", "e", "alse", "lse", "se", "ull", "ll", "l")  # true, false, null


def starts_a_json_object(text: str) -> bool:
    """Whether some ending makes `text` a JSON object."""
    closers: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            closers.append("]" if char == "[" else "}")
        elif char in "]}" and closers:
            closers.pop()
    close = "".join(reversed(closers))
    for string_end in STRING_ENDS if in_string else ("",):
        for value_end in VALUE_ENDS + LITERAL_ENDS:
            try:
                if isinstance(json.loads(text + string_end + value_end + close), dict):
                    return True
            except json.JSONDecodeError:
                pass
    return False


def test_a_schema_the_converter_cannot_handle_is_400(client: openai.OpenAI, model_id: str) -> None:
    for schema in ({"type": "no-such-type"}, {"type": "array", "maxItems": 3000}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=model_id,
                messages=[{"role": "user", "content": "hi"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema},
                },
                max_tokens=4,
            )
        assert caught.value.body["param"] == "response_format"  # type: ignore[index]


@pytest.mark.compares_texts
def test_chat_logprobs(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the reply with logprobs is the one
    without (logprobs leave the sampled tokens alone, INF-014)."""
    client = exact_client
    reply = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert reply.usage is not None and len(entries) == reply.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
        assert [len(entry.top_logprobs)] == [3]
        assert entry.top_logprobs[0].token == entry.token  # greedy: the likeliest
        alternatives = [t.logprob for t in entry.top_logprobs]
        assert alternatives == sorted(alternatives, reverse=True)
    # Entries cover every generated token, a matched stop string's too.
    assert "".join(e.token for e in entries).startswith(choice.message.content or "")
    plain = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=6,
        temperature=0,
    )
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content


@pytest.mark.compares_texts
def test_completion_logprobs_whole_and_streamed(exact_client: openai.OpenAI, model_id: str) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the streamed tokens are the whole
    reply's."""
    client = exact_client
    kwargs: dict[str, Any] = {
        "model": model_id,
        "prompt": PROMPT,
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": 2,
        "extra_body": {"ignore_eos": True},  # eight tokens, wherever the model would end
    }
    whole = client.completions.create(**kwargs)
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert "".join(logprobs.tokens) == whole.choices[0].text and len(logprobs.tokens) == 8
    assert logprobs.token_logprobs is not None and all(lp <= 0 for lp in logprobs.token_logprobs)
    assert logprobs.top_logprobs is not None
    for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert token in top and 2 <= len(top) <= 3  # the two likeliest, and the sampled one
    offsets = logprobs.text_offset
    assert offsets is not None and offsets[0] == 0
    assert [
        whole.choices[0].text[o:].startswith(t)
        for o, t in zip(offsets, logprobs.tokens, strict=True)
    ] == [True] * 8
    chunks = list(client.completions.create(stream=True, **kwargs))
    streamed: list[str] = []
    streamed_offsets: list[int] = []
    for chunk in chunks:
        if chunk.choices[0].text:
            part = chunk.choices[0].logprobs
            assert part is not None and part.tokens is not None and part.text_offset is not None
            assert "".join(part.tokens) == chunk.choices[0].text
            streamed += part.tokens
            streamed_offsets += part.text_offset
    assert (streamed, streamed_offsets) == (logprobs.tokens, offsets)


@pytest.mark.compares_texts
def test_min_tokens_holds_off_the_end(exact_client: openai.OpenAI, model_id: str) -> None:
    """A bias makes <eos> certain: the reply ends at once, and with min_tokens exactly
    there. Promise: exact mode, the same request gives the same tokens whatever the slot's
    cache held (docs/API.md, "Same request, same text"): the held reply is the greedy one
    with every end-of-generation token banned (ignore_eos)."""
    client = exact_client
    eager: dict[str, Any] = {
        "model": model_id,
        "prompt": PROMPT,
        "max_tokens": 30,
        "temperature": 0,
        "logit_bias": {str(GEMMA_EOS): 100},
    }
    at_once = client.completions.create(**eager)
    assert at_once.choices[0].finish_reason == "stop" and at_once.choices[0].text == ""
    held = client.completions.create(**eager, extra_body={"min_tokens": 10})
    assert held.choices[0].finish_reason == "stop"
    assert held.usage is not None and held.usage.completion_tokens == 10
    greedy = client.completions.create(
        model=model_id, prompt=PROMPT, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}
    )
    assert held.choices[0].text == greedy.choices[0].text


# The openai client's async SSE reader stops at [DONE] without closing httpx's byte
# iterator, which Python reports when it is collected; that is the client's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_async_stream_json_schema_with_logprobs(worker_url: str, model_id: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{worker_url}/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Which city is the largest?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "c", "schema": CITY_SCHEMA},
        },
        max_tokens=CITY_TOKENS,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    parts: list[str] = []
    tokens: list[str] = []
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                logprobs = chunk.choices[0].logprobs
                assert logprobs is not None and logprobs.content is not None
                assert all(len(e.top_logprobs) == 2 for e in logprobs.content)
                tokens += [e.token for e in logprobs.content]
    text = "".join(parts)
    jsonschema_rs.validate(CITY_SCHEMA, json.loads(text))
    assert "".join(tokens) == text
    await client.close()
    gc.collect()  # report the client's unclosed iterator here, under this test's filter

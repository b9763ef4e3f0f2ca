"""response_format, min_tokens and logprobs over HTTP, in-process on the fake engine (virtual
time). The fake engine's logprobs are scripted (engine/fake.py:fake_logprobs): token i has
-0.25, -0.5, -0.75, -1 in turn, its alternatives "a", "b", ... one nat apart below it."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.grammar import json_object_grammar, schema_grammar
from llm_worker_rbee.testing.asgi import Exchange
from llm_worker_rbee.testing.inprocess import inprocess_worker

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
COMPLETION = {"prompt": "hi", "max_tokens": 8}
# The fake's default reply, one token each.
PIECES = ["Hello", ",", " world", "!"]
LOGPROBS = [-0.25, -0.5, -0.75, -1.0]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def post(path: str, body: dict[str, Any], script: FakeScript | None = None) -> Exchange:
    async with inprocess_worker(script=script) as worker:
        return await worker.request("POST", path, body)


def chunks(response: Exchange) -> list[dict[str, Any]]:
    """The JSON chunks of an OpenAI stream, without the usage chunk and [DONE]."""
    assert response.status == 200 and response.streaming
    assert response.events[-1].data == "[DONE]"
    return [e.json() for e in response.events[:-1] if e.json()["choices"]]


@pytest.mark.behavior("INF-015")
async def test_chat_logprobs_whole(autojump_clock: trio.testing.MockClock) -> None:
    response = await post("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2})
    assert response.status == 200, response.body
    choice = response.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert [e["token"] for e in content] == PIECES
    assert "".join(e["token"] for e in content) == choice["message"]["content"]
    assert [e["logprob"] for e in content] == LOGPROBS
    assert content[2]["bytes"] == list(b" world")
    assert content[0]["top_logprobs"] == [
        {"token": "Hello", "logprob": -0.25, "bytes": list(b"Hello")},
        {"token": "a", "logprob": -1.25, "bytes": [97]},
    ]
    assert choice["logprobs"]["refusal"] is None


@pytest.mark.behavior("INF-015")
async def test_chat_logprobs_without_top_logprobs(autojump_clock: trio.testing.MockClock) -> None:
    response = await post("/v1/chat/completions", {**CHAT, "logprobs": True})
    content = response.json()["choices"][0]["logprobs"]["content"]
    assert [e["logprob"] for e in content] == LOGPROBS
    assert all(e["top_logprobs"] == [] for e in content)


@pytest.mark.behavior("INF-015")
async def test_chat_stream_chunks_carry_their_tokens_logprobs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post(
        "/v1/chat/completions", {**CHAT, "stream": True, "logprobs": True, "top_logprobs": 1}
    )
    choices = [c["choices"][0] for c in chunks(response)]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert choices[0]["logprobs"] is None and choices[-1]["logprobs"] is None
    deltas = choices[1:-1]
    assert deltas and all(c["logprobs"] is not None for c in deltas)
    for choice in deltas:  # each chunk's entries spell exactly that chunk's text
        tokens = [e["token"] for e in choice["logprobs"]["content"]]
        assert "".join(tokens) == choice["delta"]["content"]
    entries = [e for c in deltas for e in c["logprobs"]["content"]]
    assert [e["token"] for e in entries] == PIECES
    assert [len(e["top_logprobs"]) for e in entries] == [1] * 4


@pytest.mark.behavior("INF-015")
async def test_completion_logprobs_whole(autojump_clock: trio.testing.MockClock) -> None:
    response = await post("/v1/completions", {**COMPLETION, "logprobs": 2})
    choice = response.json()["choices"][0]
    assert choice["text"] == "Hello, world!"
    assert choice["logprobs"] == {
        "tokens": PIECES,
        "token_logprobs": LOGPROBS,
        "top_logprobs": [
            {"Hello": -0.25, "a": -1.25},
            {",": -0.5, "a": -1.5},
            {" world": -0.75, "a": -1.75},
            {"!": -1.0, "a": -2.0},
        ],
        "text_offset": [0, 5, 6, 12],
    }


@pytest.mark.behavior("INF-015")
async def test_completion_logprobs_zero_still_gives_the_sampled_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post("/v1/completions", {**COMPLETION, "logprobs": 0})
    logprobs = response.json()["choices"][0]["logprobs"]
    assert logprobs["top_logprobs"] == [{p: lp} for p, lp in zip(PIECES, LOGPROBS, strict=True)]


@pytest.mark.behavior("INF-015")
async def test_completion_stream_offsets_run_on_across_chunks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post("/v1/completions", {**COMPLETION, "stream": True, "logprobs": 1})
    choices = [c["choices"][0] for c in chunks(response)]
    texts = [c for c in choices if c["text"]]
    assert all(c["logprobs"]["tokens"] for c in texts)
    assert choices[-1]["finish_reason"] == "stop" and choices[-1]["logprobs"] is None
    offsets = [o for c in texts for o in c["logprobs"]["text_offset"]]
    tokens = [t for c in texts for t in c["logprobs"]["tokens"]]
    assert (tokens, offsets) == (PIECES, [0, 5, 6, 12])


@pytest.mark.behavior("INF-015")
async def test_a_character_split_across_tokens(autojump_clock: trio.testing.MockClock) -> None:
    script = FakeScript(reply=["d", b"\xc3", b"\xa9", "j"])
    response = await post("/v1/completions", {**COMPLETION, "logprobs": 0}, script)
    choice = response.json()["choices"][0]
    assert choice["text"] == "déj"
    assert choice["logprobs"]["tokens"] == ["d", "bytes:\\xc3", "bytes:\\xa9", "j"]
    assert choice["logprobs"]["text_offset"] == [0, 1, 1, 2]
    chat = await post("/v1/chat/completions", {**CHAT, "logprobs": True}, script)
    content = chat.json()["choices"][0]["logprobs"]["content"]
    assert [e["bytes"] for e in content] == [[100], [0xC3], [0xA9], [106]]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)],
)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.behavior("INF-015")
async def test_logprobs_are_null_unless_asked(
    autojump_clock: trio.testing.MockClock, path: str, body: dict[str, Any], stream: bool
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("POST", path, {**body, "stream": stream})
        assert worker.engine.admitted[-1].logprobs is None  # nothing computed either
    if stream:
        assert all(c["choices"][0]["logprobs"] is None for c in chunks(response))
    else:
        assert response.json()["choices"][0]["logprobs"] is None


@pytest.mark.behavior("INF-011")
async def test_min_tokens_holds_off_the_end(autojump_clock: trio.testing.MockClock) -> None:
    """The fake repeats its reply until min_tokens, then ends (finish_reason stop)."""
    response = await post("/v1/chat/completions", {**CHAT, "max_tokens": 20, "min_tokens": 6})
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello, world!Hello,"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize(
    ("response_format", "grammar"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, json_object_grammar()),
        ({"type": "json_object", "schema": PERSON}, schema_grammar(PERSON)),
        (
            {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
            schema_grammar(PERSON),
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "any", "strict": True}},
            schema_grammar({}),
        ),
    ],
    ids=["text", "json_object", "json_object_schema", "json_schema", "json_schema_no_schema"],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/inference"])
@pytest.mark.behavior("INF-012")
async def test_response_format_becomes_the_engines_grammar(
    autojump_clock: trio.testing.MockClock,
    path: str,
    response_format: dict[str, Any],
    grammar: str | None,
) -> None:
    body = CHAT if path == "/v1/chat/completions" else COMPLETION
    async with inprocess_worker() as worker:
        # /v1/inference streams (else it is a two-call job, admitted after the answer).
        stream = {"stream": True} if path == "/v1/inference" else {}
        request = {**body, "response_format": response_format, **stream}
        response = await worker.request("POST", path, request)
        assert response.status == 200, response.body
        assert [s.grammar for s in worker.engine.admitted] == [grammar]


@pytest.mark.parametrize(
    ("path", "extra", "param", "code"),
    [
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema"}},
            "response_format",
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
            "missing_required_parameter",
        ),
        (
            "/v1/completions",
            {"response_format": {"type": "json_object", "schema": {"type": "nope"}}},
            "response_format",
            "invalid_value",
        ),
        (
            "/v1/completions",
            {"response_format": {"type": "json_object", "schema": {"$ref": "#/$defs/missing"}}},
            "response_format",
            "invalid_value",
        ),
        (
            "/v1/completions",
            {"response_format": {"type": "json_object", "schema": {"maxLength": 10**9}}},
            "response_format",
            "invalid_value",
        ),
        (
            "/v1/completions",
            {"response_format": {"type": "json_object", "schema": {"pattern": "^a{1,99999}$"}}},
            "response_format",
            "invalid_value",
        ),
        ("/v1/chat/completions", {"top_logprobs": 3}, "top_logprobs", "invalid_value"),
        (
            "/v1/chat/completions",
            {"top_logprobs": 3, "logprobs": False},
            "top_logprobs",
            "invalid_value",
        ),
        ("/v1/completions", {"logprobs": 1, "echo": True}, "logprobs", "unsupported_parameter"),
        ("/v1/completions", {"min_tokens": 9}, "min_tokens", "invalid_value"),
        ("/v1/chat/completions", {"min_tokens": 9}, "min_tokens", "invalid_value"),
    ],
)
@pytest.mark.behavior("INF-011", "INF-012", "INF-015")
async def test_bad_structured_requests_are_400_naming_the_param(
    autojump_clock: trio.testing.MockClock,
    path: str,
    extra: dict[str, Any],
    param: str,
    code: str,
) -> None:
    body = CHAT if path == "/v1/chat/completions" else COMPLETION
    async with inprocess_worker() as worker:
        response = await worker.request("POST", path, {**body, **extra})
        assert response.status == 400, response.body
        error = response.json()["error"]
        assert (error["param"], error["code"], error["type"]) == (
            param,
            code,
            "invalid_request_error",
        )
        assert worker.engine.admitted == []

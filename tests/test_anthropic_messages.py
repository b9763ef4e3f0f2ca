"""POST /v1/messages and /v1/messages/count_tokens, in-process on the fake engine (virtual
time): the message, Anthropic's stream events in order, stop reasons, and every error in
Anthropic's shape. The fake's default reply is "Hello", ",", " world", "!"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import trio
import trio.testing
from pydantic import SecretStr

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.grammar import schema_grammar
from llm_worker_rbee.http.anthropic.schemas import (
    AnthropicError,
    MessageObject,
    MessageStreamEvent,
)
from llm_worker_rbee.testing.asgi import Exchange
from llm_worker_rbee.testing.inprocess import inprocess_worker

PATH = "/v1/messages"
BODY: dict[str, Any] = {
    "model": "fake-model",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


async def post(
    body: dict[str, Any], script: FakeScript | None = None, path: str = PATH
) -> Exchange:
    async with inprocess_worker(script=script) as worker:
        return await worker.request("POST", path, body, headers={"anthropic-version": "2023-06-01"})


def stream_events(response: Exchange) -> list[dict[str, Any]]:
    """The events' data, checked: `event:` names its `type`, each fits the published schema."""
    assert response.status == 200 and response.streaming, response.body
    events = [e.json() for e in response.events]
    assert [e.name for e in response.events] == [e["type"] for e in events]
    for event in events:
        MessageStreamEvent.model_validate(event)
    return events


def anthropic_error(response: Exchange, status: int) -> dict[str, Any]:
    assert response.status == status, response.body
    body = response.json()
    AnthropicError.model_validate(body)
    assert body["type"] == "error" and "message" in body["error"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.behavior("HTTP-043", "OAI-026")
async def test_a_message_is_answered_in_anthropics_shape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post({**BODY, "system": "Be kind"})
    assert response.status == 200, response.body
    body = response.json()
    MessageObject.model_validate(body)
    assert body["id"].startswith("msg_") and body["type"] == "message"
    assert body["role"] == "assistant" and body["model"] == "fake-model"
    assert body["content"] == [{"type": "text", "text": "Hello, world!"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    prompt_tokens = 1 + len("System: Be kind\nUser: hi\nAssistant:")
    assert body["usage"] == {
        "input_tokens": prompt_tokens,
        "output_tokens": 4,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.behavior("OAI-026")
async def test_tokens_from_the_prompt_cache_are_counted_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(script=FakeScript(prompt_cache=True)) as worker:
        await worker.request("POST", PATH, BODY)
        usage = (await worker.request("POST", PATH, BODY)).json()["usage"]
    prompt_tokens = 1 + len("User: hi\nAssistant:")
    assert usage["cache_read_input_tokens"] == prompt_tokens - 1  # the last is decoded again
    assert usage["input_tokens"] == 1


@pytest.mark.behavior("OAI-026")
async def test_system_blocks_and_content_blocks_make_the_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(replies={"System: ab\nUser: cd\nAssistant: before\nUser: e\n": ["ok"]})
    body = {
        **BODY,
        "system": [
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b", "cache_control": {}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}],
            },
            {"role": "assistant", "content": "before"},
            {"role": "user", "content": "e"},
        ],
    }
    response = await post(body, script)
    assert response.status == 200, response.body
    assert response.json()["content"][0]["text"] == "ok"


@pytest.mark.parametrize(
    ("extra", "script", "text", "reason", "sequence"),
    [
        ({"max_tokens": 2}, None, "Hello,", "max_tokens", None),
        ({"stop_sequences": ["!", " world"]}, None, "Hello,", "stop_sequence", " world"),
        # The transcript's own turn marker is the end of the turn, not a stop sequence.
        ({}, FakeScript(reply=["Yes", "\nUser:", " more"]), "Yes", "end_turn", None),
    ],
)
@pytest.mark.behavior("OAI-027")
async def test_stop_reasons(
    autojump_clock: trio.testing.MockClock,
    extra: dict[str, Any],
    script: FakeScript | None,
    text: str,
    reason: str,
    sequence: str | None,
) -> None:
    body = (await post({**BODY, **extra}, script)).json()
    assert body["content"][0]["text"] == text
    assert (body["stop_reason"], body["stop_sequence"]) == (reason, sequence)


@pytest.mark.behavior("HTTP-043", "SSE-027")
async def test_a_stream_sends_anthropics_events_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = stream_events(await post({**BODY, "stream": True, "stop_sequences": ["!"]}))
    kinds = [e["type"] for e in events]
    deltas = kinds.count("content_block_delta")
    assert deltas >= 1
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {"input_tokens": 1 + len("User: hi\nAssistant:"), "output_tokens": 0}
    assert events[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Hello, world"
    assert {e["delta"]["type"] for e in events if e["type"] == "content_block_delta"} == {
        "text_delta"
    }
    delta = events[-2]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "!"}
    assert delta["usage"]["output_tokens"] == 4


@pytest.mark.behavior("SSE-028", "ERR-028")
async def test_a_stream_that_fails_ends_with_an_error_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(fail_at_steps=frozenset({3}))
    events = stream_events(await post({**BODY, "stream": True}, script))
    assert events[-1] == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "generation failed",
            "param": None,
            "code": "engine_error",
        },
    }


@pytest.mark.parametrize(
    ("change", "status", "kind", "param", "code"),
    [
        (
            {"max_tokens": None},
            400,
            "invalid_request_error",
            "max_tokens",
            "missing_required_parameter",
        ),
        ({"max_tokens": 0}, 400, "invalid_request_error", "max_tokens", "invalid_value"),
        ({"temperature": 1.5}, 400, "invalid_request_error", "temperature", "invalid_value"),
        ({"model": "claude-x"}, 404, "not_found_error", "model", "model_not_found"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 16}},
            400,
            "invalid_request_error",
            "thinking.budget_tokens",
            "invalid_value",
        ),
        (
            {"thinking": {"type": "enabled"}},
            400,
            "invalid_request_error",
            "thinking.budget_tokens",
            "missing_required_parameter",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            400,
            "invalid_request_error",
            "messages.0.content.0.type",
            "unsupported_input",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            400,
            "invalid_request_error",
            "messages.0.content.0.text",
            "missing_required_parameter",
        ),
        (
            {"messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
            "messages.0.role",
            "invalid_value",
        ),
    ],
)
@pytest.mark.behavior("ERR-027", "ERR-028", "OAI-028")
async def test_bad_requests_are_refused_in_anthropics_error_shape(
    autojump_clock: trio.testing.MockClock,
    change: dict[str, Any],
    status: int,
    kind: str,
    param: str,
    code: str,
) -> None:
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    error = anthropic_error(await post(body), status)
    assert (error["type"], error["param"], error["code"]) == (kind, param, code)


@pytest.mark.behavior("ERR-027", "ERR-028")
async def test_a_missing_field_and_errors_before_the_route_are_in_anthropics_shape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", api_key=SecretStr("sekrit"))
    async with inprocess_worker(settings) as worker:
        missing = await worker.request("POST", PATH, {**BODY, "max_tokens": None})
        assert anthropic_error(missing, 401)["type"] == "authentication_error"
        keyed = {"x-api-key": "sekrit", "anthropic-version": "2023-06-01"}
        body = {k: v for k, v in BODY.items() if k != "max_tokens"}
        response = await worker.request("POST", PATH, body, headers=keyed)
        error = anthropic_error(response, 400)
        assert (error["param"], error["code"]) == ("max_tokens", "missing_required_parameter")
        wrong_method = await worker.request("GET", PATH, headers=keyed)
        assert anthropic_error(wrong_method, 405)["type"] == "invalid_request_error"
        unknown = await worker.request("POST", f"{PATH}/batches", BODY, headers=keyed)
        assert anthropic_error(unknown, 404)["type"] == "not_found_error"
        # Other routes keep the worker's own shape.
        other = await worker.request("POST", "/v1/chat/completions", {}, headers=keyed)
        assert set(other.json()) == {"error"}


@pytest.mark.behavior("HTTP-044")
async def test_count_tokens_counts_the_rendered_prompt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = {"model": "fake-model", "system": "s", "messages": [{"role": "user", "content": "hi"}]}
    response = await post(body, path=f"{PATH}/count_tokens")
    assert response.status == 200, response.body
    assert response.json() == {"input_tokens": 1 + len("System: s\nUser: hi\nAssistant:")}
    refused = await post({**body, "model": "other"}, path=f"{PATH}/count_tokens")
    assert anthropic_error(refused, 404)["code"] == "model_not_found"


@pytest.mark.behavior("OAI-028")
async def test_thinking_disabled_and_unknown_fields_are_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = {**BODY, "thinking": {"type": "disabled"}, "metadata": {"user_id": "u"}, "x": 1}
    response = await post(body)
    assert response.status == 200, response.body


@pytest.mark.behavior("OAI-023", "OAI-026", "ERR-026")
async def test_an_output_format_schema_becomes_the_engines_grammar(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    async with inprocess_worker() as worker:
        body = {**BODY, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
        response = await worker.request("POST", PATH, body)
        assert response.status == 200, response.body
        assert [s.grammar for s in worker.engine.admitted] == [schema_grammar(schema)]
        bad = {"format": {"type": "json_schema", "schema": {"maxLength": 10**6}}}
        refused = await worker.request("POST", PATH, {**BODY, "output_config": bad})
        assert anthropic_error(refused, 400)["param"] == "output_config.format"


@pytest.mark.behavior("OAI-027")
async def test_the_end_of_the_slots_context_is_model_context_window_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 32 tokens a slot (--batch-invariant: per-slot streams); the prompt
    # "<bos>User: hi\nAssistant:" takes 20, leaving 12 of 16.
    settings = Settings(worker_id="w", ctx_size=128, slots=4, batch_invariant=True)
    async with inprocess_worker(settings, FakeScript(reply=["x"] * 30)) as worker:
        response = await worker.request("POST", PATH, BODY)
        body = response.json()
        assert body["stop_reason"] == "model_context_window_exceeded"
        assert body["usage"]["output_tokens"] == 12


# --- tools, on the fake engine with Qwen 2.5's published chat template --------------------

QWEN = (Path(__file__).parent / "templates" / "qwen2.5.jinja").read_text()
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = [
    "<tool",
    '_call>\n{"name": "get_weather", ',
    '"arguments": {"city": ',
    '"Paris"}}\n</tool_call>',
]


def qwen(reply: list[str | bytes]) -> FakeScript:
    answer: dict[str, list[str | bytes]] = {"<tool_response>\nsunny\n</tool_response>": ["Sunny."]}
    return FakeScript(reply=reply, replies=answer, chat_template=QWEN)


@pytest.mark.behavior("HTTP-046")
async def test_a_tool_call_is_a_tool_use_block(autojump_clock: trio.testing.MockClock) -> None:
    body = {**BODY, "tools": [WEATHER]}
    response = await post(body, qwen(["Let me look.", *CALL]))
    assert response.status == 200, response.body
    message = response.json()
    MessageObject.model_validate(message)
    text, call = message["content"]
    assert text == {"type": "text", "text": "Let me look."}
    assert call["type"] == "tool_use" and call["id"].startswith("toolu_")
    assert (call["name"], call["input"]) == ("get_weather", {"city": "Paris"})
    assert message["stop_reason"] == "tool_use"


@pytest.mark.behavior("HTTP-046", "SSE-027")
async def test_a_streamed_tool_call(autojump_clock: trio.testing.MockClock) -> None:
    events = stream_events(await post({**BODY, "tools": [WEATHER], "stream": True}, qwen(CALL)))
    kinds = [e["type"] for e in events]
    deltas = kinds.count("content_block_delta")
    assert deltas >= 1
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[2]["content_block"]
    assert block["type"] == "tool_use" and block["input"] == {}
    partial = "".join(
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"city": "Paris"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.behavior("HTTP-046", "INF-029")
async def test_a_tool_use_cut_by_max_tokens_never_shows_its_markup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cut after each of the answer's tokens, whole and streamed: a text block holds only the
    text before the call; the call is a tool_use block once its arguments began (its input
    `{}` while they do not parse), and the stop reason is `max_tokens`."""
    async with inprocess_worker(script=qwen(["Let me look.", *CALL])) as worker:
        for max_tokens in range(1, len(CALL) + 1):
            body = {**BODY, "tools": [WEATHER], "tool_choice": {"type": "any"}}
            body["max_tokens"] = max_tokens
            headers = {"anthropic-version": "2023-06-01"}
            whole = (await worker.request("POST", PATH, body, headers=headers)).json()
            MessageObject.model_validate(whole)
            events = stream_events(
                await worker.request("POST", PATH, {**body, "stream": True}, headers=headers)
            )
            texts = [b["text"] for b in whole["content"] if b["type"] == "text"]
            streamed = "".join(
                e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"
            )
            assert "".join(texts) == streamed == "Let me look.", max_tokens
            uses = [b for b in whole["content"] if b["type"] == "tool_use"]
            starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
            assert [b["name"] for b in uses] == [
                b["name"] for b in starts if b["type"] == "tool_use"
            ]
            assert len(uses) == (1 if max_tokens >= 4 else 0), max_tokens
            assert all(b["input"] == {} for b in uses)
            assert whole["stop_reason"] == events[-2]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.behavior("HTTP-046")
async def test_a_tool_result_answers_the_call_through_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                }
            ],
        },
    ]
    response = await post({**BODY, "tools": [WEATHER], "messages": history}, qwen(CALL))
    assert response.status == 200, response.body
    assert response.json()["content"] == [{"type": "text", "text": "Sunny."}]
    assert response.json()["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("choice", "grammar"),
    [
        ({"type": "auto"}, False),
        ({"type": "any"}, True),
        ({"type": "tool", "name": "get_weather"}, True),
    ],
)
@pytest.mark.behavior("HTTP-046")
async def test_tool_choice_any_or_tool_is_enforced_by_a_grammar(
    autojump_clock: trio.testing.MockClock, choice: dict[str, Any], grammar: bool
) -> None:
    async with inprocess_worker(script=qwen(CALL)) as worker:
        body = {**BODY, "tools": [WEATHER], "tool_choice": choice}
        response = await worker.request("POST", PATH, body)
        assert response.status == 200, response.body
        [sampling] = worker.engine.admitted
        assert (sampling.grammar is not None) == grammar


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "tool", "name": "other"}}, "tool_choice"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"tools": [{"name": "search", "type": "web_search_20250305"}]}, "tools.0.type"),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {}}}},
            "output_config.format",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages.0.content.0.tool_use_id",
        ),
    ],
)
@pytest.mark.behavior("HTTP-046")
async def test_tool_requests_that_do_not_fit_are_400(
    autojump_clock: trio.testing.MockClock, extra: dict[str, Any], param: str
) -> None:
    body = {**BODY, "tools": [WEATHER], **extra}
    error = anthropic_error(await post(body, qwen(CALL)), 400)
    assert error["param"] == param


@pytest.mark.behavior("HTTP-044", "HTTP-046")
async def test_count_tokens_counts_the_tools_too(autojump_clock: trio.testing.MockClock) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    plain = await post(body, qwen([]), path=f"{PATH}/count_tokens")
    with_tools = await post({**body, "tools": [WEATHER]}, qwen([]), path=f"{PATH}/count_tokens")
    assert with_tools.json()["input_tokens"] > plain.json()["input_tokens"] + len("get_weather")


@pytest.mark.behavior("ERR-027", "ERR-028", "OAI-029")
async def test_the_anthropic_client_raises_its_own_classes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The official client over the in-process app (its own httpx2, through ASGI): each
    status is its class, with the message; a full worker is `overloaded_error`."""
    settings = Settings(worker_id="w", api_key=SecretStr("sekrit"), slots=1, max_queue=0)
    script = FakeScript(reply=["x"] * 50, step_latency=1.0)
    ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    async with (
        inprocess_worker(settings, script) as worker,
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=worker.app)) as http,
    ):

        def client(key: str) -> anthropic.AsyncAnthropic:
            return anthropic.AsyncAnthropic(
                base_url="http://in-process", api_key=key, max_retries=0, http_client=http
            )

        with pytest.raises(anthropic.AuthenticationError) as denied:
            await client("wrong").messages.create(model="fake-model", max_tokens=4, messages=ask)
        assert "the API key is not valid" in denied.value.message
        claude = client("sekrit")
        with pytest.raises(anthropic.BadRequestError):
            await claude.messages.create(model="fake-model", max_tokens=0, messages=ask)
        with pytest.raises(anthropic.NotFoundError):
            await claude.messages.create(model="claude-x", max_tokens=4, messages=ask)
        async with trio.open_nursery() as nursery:
            # One request holds the only slot and the queue takes none.
            nursery.start_soon(worker.request, "POST", PATH, BODY, {"x-api-key": "sekrit"})
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(anthropic.InternalServerError) as full:
                await claude.messages.create(model="fake-model", max_tokens=4, messages=ask)
            assert full.value.status_code == 503
            assert full.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
            nursery.cancel_scope.cancel()

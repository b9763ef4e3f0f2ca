"""The generic tool format over HTTP, in-process on the fake engine (virtual time), on a
model without a chat template: chat (whole and streamed), Responses and Messages, the
grammar each request gets, the history sent back, and the refusal with --tool-fallback off."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.http.response_models import ChatCompletion, ChatCompletionChunk
from llm_worker_rbee.testing.asgi import Exchange
from llm_worker_rbee.testing.inprocess import inprocess_worker
from tests.test_anthropic_messages import stream_events as anthropic_events
from tests.test_responses_api import stream_events as responses_events

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 64}
# The model's answer, a token per piece; the fake engine answers so only when the prompt
# holds the generic format's instructions.
CALL = ['{"tool_calls": [{"name": "get', '_weather", "arguments": {"ci', 'ty": "Paris"}}]}']
REPLY = ['{"response": "Sunny', " and 18", ' \\u00b0C."}']
INSTRUCTIONS = "You can call these tools"


def generic(reply: list[str | bytes]) -> FakeScript:
    return FakeScript(chat_template=None, reply=["no instructions"], replies={INSTRUCTIONS: reply})


async def request(
    path: str, body: dict[str, Any], script: FakeScript, settings: Settings | None = None
) -> tuple[Exchange, str | None]:
    """The response, and the grammar the engine was given."""
    headers = {"anthropic-version": "2023-06-01"}
    async with inprocess_worker(script=script, settings=settings) as worker:
        response = await worker.request("POST", path, body, headers=headers)
        admitted = worker.engine.admitted
        return response, admitted[-1].grammar if admitted else None


@pytest.mark.behavior("HTTP-080", "HTTP-081")
async def test_a_model_without_a_template_calls_through_the_generic_format(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response, grammar = await request(
        "/v1/chat/completions", {**ASK, "tools": [WEATHER]}, generic(CALL)
    )
    assert response.status == 200, response.body
    choice = ChatCompletion.model_validate(response.json()).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].id.startswith("call_")
    assert (calls[0].function.name, json.loads(calls[0].function.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    # Under `auto` too the grammar holds the answer: a call, or a reply.
    assert grammar is not None and '"\\"tool_calls\\""' in grammar
    assert '"\\"response\\""' in grammar


@pytest.mark.behavior("HTTP-080")
async def test_a_streamed_reply_and_a_streamed_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = {**ASK, "tools": [WEATHER], "stream": True}
    response, _ = await request("/v1/chat/completions", body, generic(REPLY))
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in response.events[:-1]]
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert contents == ["Sunny", " and 18", " °C."]  # the reply's text, as it is written
    assert chunks[-1].choices[0].finish_reason == "stop"
    response, _ = await request("/v1/chat/completions", body, generic(CALL))
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in response.events[:-1]]
    parts = [p for c in chunks for p in c.choices[0].delta.tool_calls or ()]
    first, rest = parts[0], parts[1:]
    assert first.id is not None and first.function is not None
    assert (first.index, first.function.name, first.function.arguments) == (0, "get_weather", "")
    assert len(rest) == 2 and all(p.id is None for p in rest)
    arguments = "".join(p.function.arguments or "" for p in rest if p.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert not any(c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.behavior("HTTP-082")
async def test_the_result_goes_back_as_json_turns(autojump_clock: trio.testing.MockClock) -> None:
    history = [
        *ASK["messages"],  # type: ignore[misc]
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "18 C"},
    ]
    rendered = (
        'Assistant: {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}\n'
        'User: {"tool_response": {"tool": "get_weather", "tool_call_id": "call_abc", '
        '"content": "18 C"}}\nAssistant:'
    )
    script = FakeScript(chat_template=None, reply=["no"], replies={rendered: REPLY})
    response, _ = await request(
        "/v1/chat/completions", {"messages": history, "tools": [WEATHER]}, script
    )
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Sunny and 18 °C." and "tool_calls" not in message


@pytest.mark.behavior("HTTP-083", "HTTP-045", "HTTP-046")
async def test_responses_and_messages_call_through_it_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    function = {"type": "function", **WEATHER["function"]}  # type: ignore[dict-item]
    body = {"input": "Weather in Paris?", "tools": [function], "tool_choice": "required"}
    response, grammar = await request("/v1/responses", body, generic(CALL))
    (call,) = response.json()["output"]
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert grammar is not None and '"\\"response\\""' not in grammar  # required: a call
    events = responses_events(
        (await request("/v1/responses", {**body, "stream": True}, generic(CALL)))[0]
    )
    assert [e["type"] for e in events].count("response.function_call_arguments.delta") == 2
    tool = {
        "name": "get_weather",
        "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
    }
    messages = {
        "model": "fake-model",
        "max_tokens": 64,
        "messages": ASK["messages"],
        "tools": [tool],
    }
    response, _ = await request("/v1/messages", messages, generic(CALL))
    (block,) = response.json()["content"]
    assert block["type"] == "tool_use" and block["input"] == {"city": "Paris"}
    assert response.json()["stop_reason"] == "tool_use"
    streamed = anthropic_events(
        (await request("/v1/messages", {**messages, "stream": True}, generic(REPLY)))[0]
    )
    texts = [e["delta"]["text"] for e in streamed if e["type"] == "content_block_delta"]
    assert "".join(texts) == "Sunny and 18 °C."


@pytest.mark.behavior("ERR-020", "CFG-045")
async def test_with_the_fallback_off_tools_are_refused_on_every_api(
    autojump_clock: trio.testing.MockClock,
) -> None:
    off = Settings(worker_id="in-process", tool_fallback="off")
    function = {"type": "function", "name": "get_weather"}
    anthropic = {"model": "fake-model", "max_tokens": 8, "messages": ASK["messages"]}
    for path, body in (
        ("/v1/chat/completions", {**ASK, "tools": [WEATHER]}),
        ("/v1/responses", {"input": "hi", "tools": [function]}),
        ("/v1/messages", {**anthropic, "tools": [{"name": "get_weather"}]}),
    ):
        response, _ = await request(path, body, generic(CALL), off)
        assert response.status == 400, response.body
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("tools", "tools_not_supported")


@pytest.mark.behavior("HTTP-081")
async def test_another_constraint_beside_auto_is_400_and_a_forced_call_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    json_object = {"response_format": {"type": "json_object"}}
    for extra, param in (
        (json_object, "response_format"),
        ({"json_schema": {"type": "object"}}, "json_schema"),
        ({"grammar": 'root ::= "a"'}, "grammar"),
    ):
        body = {**ASK, "tools": [WEATHER], **extra}
        response, _ = await request("/v1/chat/completions", body, generic(CALL))
        assert response.status == 400, response.body
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, "unsupported_parameter")
    forced = {**ASK, "tools": [WEATHER], "tool_choice": "required", **json_object}
    response, grammar = await request("/v1/chat/completions", forced, generic(CALL))
    assert response.status == 200 and grammar is not None and '"\\"tool_calls\\""' in grammar

"""Tool calls on /v1/chat/completions, in-process on the fake engine (virtual time) with
published chat templates (tests/templates/): the parsed message, the stream's deltas, the
grammar a forced call gets, the history, and the 400s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.http.response_models import ChatCompletion, ChatCompletionChunk
from llm_worker_rbee.testing.asgi import Exchange
from llm_worker_rbee.testing.inprocess import inprocess_worker

TEMPLATES = Path(__file__).parent / "templates"
QWEN = (TEMPLATES / "qwen2.5.jinja").read_text()
MISTRAL = (TEMPLATES / "mistral-7b-v0.3.jinja").read_text()
GEMMA = (TEMPLATES / "gemma3.jinja").read_text()
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
TIME = {"type": "function", "function": {"name": "get_time"}}
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 64}
# The model's answer, a token per piece, the call's opening split across tokens.
CALL_PIECES = [
    "Let me check.",
    "\n<tool",
    "_call>\n{",
    '"name": "get_weather", ',
    '"arguments": {"city": ',
    '"Paris"}}\n</tool_call>',
]


async def post(
    body: dict[str, Any], script: FakeScript, settings: Settings | None = None
) -> Exchange:
    async with inprocess_worker(script=script, settings=settings) as worker:
        return await worker.request("POST", "/v1/chat/completions", body)


def qwen(reply: list[str | bytes] | None = None, **replies: list[str | bytes]) -> FakeScript:
    return FakeScript(chat_template=QWEN, reply=reply or CALL_PIECES, replies=dict(replies.items()))


def error_of(response: Exchange) -> tuple[str | None, str | None]:
    assert response.status == 400, response.body
    error = response.json()["error"]
    return error["param"], error["code"]


@pytest.mark.behavior("OAI-006", "INF-028", "INF-029")
async def test_a_call_comes_back_as_tool_calls(autojump_clock: trio.testing.MockClock) -> None:
    response = await post({**ASK, "tools": [WEATHER, TIME]}, qwen())
    assert response.status == 200, response.body
    body = ChatCompletion.model_validate(response.json())
    choice = body.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].id.startswith("call_") and calls[0].type == "function"
    assert (calls[0].function.name, calls[0].function.arguments) == (
        "get_weather",
        '{"city": "Paris"}',
    )


@pytest.mark.behavior("SSE-020", "SSE-021")
async def test_a_streamed_call_sends_its_name_then_its_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post({**ASK, "tools": [WEATHER], "stream": True}, qwen())
    assert response.status == 200 and response.events[-1].data == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in response.events[:-1]]
    deltas = [c.choices[0].delta for c in chunks]
    content = "".join(d.content or "" for d in deltas)
    assert content == "Let me check."  # nothing of the call leaked as content
    parts = [call for d in deltas for call in d.tool_calls or ()]
    first = parts[0]
    assert first.index == 0 and first.id is not None and first.id.startswith("call_")
    assert first.type == "function" and first.function is not None
    assert (first.function.name, first.function.arguments) == ("get_weather", "")
    rest = parts[1:]
    assert len(rest) >= 2  # the arguments came in fragments, as they were written
    assert all(p.id is None and p.function is not None and p.function.name is None for p in rest)
    arguments = "".join(p.function.arguments or "" for p in rest if p.function)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"


@pytest.mark.behavior("OAI-007", "INF-030")
async def test_required_and_named_choices_are_enforced_by_a_grammar(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for choice, present, absent in (
        ("required", ['"\\"get_weather\\""', '"\\"get_time\\""'], []),
        (
            {"type": "function", "function": {"name": "get_time"}},
            ['"\\"get_time\\""'],
            ['"\\"get_weather\\""'],
        ),
    ):
        async with inprocess_worker(script=qwen()) as worker:
            body = {**ASK, "tools": [WEATHER, TIME], "tool_choice": choice}
            response = await worker.request("POST", "/v1/chat/completions", body)
            assert response.status == 200, response.body
            grammar = worker.engine.admitted[-1].grammar
        assert grammar is not None and '"<tool_call>\\n"' in grammar
        assert all(p in grammar for p in present) and not any(a in grammar for a in absent)


@pytest.mark.behavior("OAI-008")
async def test_auto_and_none_leave_the_model_free(autojump_clock: trio.testing.MockClock) -> None:
    async with inprocess_worker(script=qwen(["Sunny."], **{"<tools>": ["Knows tools."]})) as w:
        auto = await w.request("POST", "/v1/chat/completions", {**ASK, "tools": [WEATHER]})
        none = await w.request(
            "POST", "/v1/chat/completions", {**ASK, "tools": [WEATHER], "tool_choice": "none"}
        )
        assert [s.grammar for s in w.engine.admitted] == [None, None]
    assert auto.json()["choices"][0]["message"]["content"] == "Knows tools."
    # none: the tools are left out of the prompt, and the answer is plain text.
    message = none.json()["choices"][0]
    assert message["message"] == {"role": "assistant", "content": "Sunny.", "refusal": None}
    assert message["finish_reason"] == "stop"


@pytest.mark.behavior("OAI-009", "INF-031")
async def test_a_conversation_with_calls_and_results_renders_through_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = [
        {"role": "user", "content": "Weather in Paris?"},
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
        {"role": "tool", "tool_call_id": "call_abc", "content": "18 C, sunny"},
    ]
    rendered = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response>"
    )
    script = qwen(["no"], **{rendered: ["It is 18 C and sunny."]})
    response = await post({"messages": history, "tools": [WEATHER]}, script)
    assert response.status == 200, response.body
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "It is 18 C and sunny."
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    # Mistral's template wants ids of nine letters or digits: OpenAI's ids are mapped.
    mistral = FakeScript(chat_template=MISTRAL, replies={'"call_id": "': ["Sunny."]})
    response = await post({"messages": history, "tools": [WEATHER]}, mistral)
    assert response.json()["choices"][0]["message"]["content"] == "Sunny."


@pytest.mark.behavior("ERR-020", "CFG-045")
async def test_a_model_without_tool_support_is_400_naming_tools(
    autojump_clock: trio.testing.MockClock,
) -> None:
    off = Settings(worker_id="in-process", tool_fallback="off")
    for template, reason in ((None, "no chat template"), (GEMMA, "never renders tools")):
        script = FakeScript(chat_template=template)
        response = await post({**ASK, "tools": [WEATHER]}, script, off)
        assert error_of(response) == ("tools", "tools_not_supported")
        assert reason in response.json()["error"]["message"]
        assert "--tool-fallback off" in response.json()["error"]["message"]
        # tool_choice none only asks for a plain answer, which any model can give.
        plain = await post({**ASK, "tools": [WEATHER], "tool_choice": "none"}, script, off)
        assert plain.status == 200, plain.body
        assert plain.json()["choices"][0]["message"]["content"] == "Hello, world!"


@pytest.mark.behavior("ERR-021")
async def test_a_choice_that_does_not_fit_the_tools_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    named = {"type": "function", "function": {"name": "nope"}}
    for body in (
        {**ASK, "tools": [WEATHER], "tool_choice": named},
        {**ASK, "tool_choice": "required"},
    ):
        assert error_of(await post(body, qwen())) == ("tool_choice", "invalid_value")
    duplicate = {**ASK, "tools": [WEATHER, WEATHER]}
    assert error_of(await post(duplicate, qwen())) == ("tools", "invalid_value")
    bad_schema = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "array", "maxItems": 5000}},
    }
    forced = {**ASK, "tools": [bad_schema], "tool_choice": "required"}
    assert error_of(await post(forced, qwen())) == ("tools", "invalid_value")


@pytest.mark.behavior("ERR-022")
@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "18 C"}, "messages.0"),
        ({"role": "user", "content": None}, "messages.0"),
        ({"role": "user", "content": "x", "tool_calls": []}, None),
        (
            {
                "role": "user",
                "content": "x",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
            },
            "messages.0",
        ),
    ],
)
async def test_a_tool_message_or_call_in_the_wrong_place_is_400(
    autojump_clock: trio.testing.MockClock, message: dict[str, Any], param: str | None
) -> None:
    response = await post({"messages": [message], "max_tokens": 4}, qwen(["ok"]))
    if param is None:  # an empty list of calls is no call
        assert response.status == 200, response.body
    else:
        assert error_of(response) == (param, "invalid_value")


@pytest.mark.behavior("OAI-003")
async def test_tools_are_still_refused_on_completions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(script=qwen()) as worker:
        response = await worker.request(
            "POST", "/v1/completions", {"prompt": "x", "max_tokens": 4, "tools": [WEATHER]}
        )
    assert error_of(response) == ("tools", "unsupported_parameter")


@pytest.mark.behavior("SSE-021")
async def test_each_choice_has_its_own_calls_and_every_token_its_logprobs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = {**ASK, "tools": [WEATHER], "stream": True, "n": 2, "logprobs": True}
    response = await post(body, qwen())
    chunks = [ChatCompletionChunk.model_validate(e.json()) for e in response.events[:-1]]
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        ids = {p.id for c in mine for p in c.delta.tool_calls or () if p.id}
        assert len(ids) == 1 and mine[-1].finish_reason == "tool_calls"
        entries = [e for c in mine if c.logprobs and c.logprobs.content for e in c.logprobs.content]
        assert "".join(e.token for e in entries) == "".join(CALL_PIECES)


@pytest.mark.behavior("INF-029", "SSE-020")
async def test_a_call_cut_by_max_tokens_never_shows_its_markup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cut after each of the answer's tokens, whole and streamed: the text before the call is
    content, nothing of the call's markup is; the call, once its arguments began, comes in
    `tool_calls` as far as written, and the finish is `length`."""
    async with inprocess_worker(script=qwen()) as worker:
        for max_tokens in range(2, len(CALL_PIECES)):
            body = {**ASK, "tools": [WEATHER], "tool_choice": "required", "max_tokens": max_tokens}
            whole = await worker.request("POST", "/v1/chat/completions", body)
            choice = ChatCompletion.model_validate(whole.json()).choices[0]
            streamed = await worker.request(
                "POST", "/v1/chat/completions", {**body, "stream": True}
            )
            chunks = [ChatCompletionChunk.model_validate(e.json()) for e in streamed.events[:-1]]
            deltas = [c.choices[0].delta for c in chunks]
            assert choice.message.content == "Let me check.", max_tokens
            assert "".join(d.content or "" for d in deltas) == "Let me check.", max_tokens
            assert choice.finish_reason == chunks[-1].choices[0].finish_reason == "length"
            calls = choice.message.tool_calls or []
            parts = [call for d in deltas for call in d.tool_calls or ()]
            assert len(calls) == (1 if max_tokens >= 5 else 0), max_tokens
            for call in calls:
                assert call.function.name == "get_weather"
                assert '{"city": "Paris"}'.startswith(call.function.arguments)
                assert "".join(p.function.arguments or "" for p in parts if p.function) == (
                    call.function.arguments
                )

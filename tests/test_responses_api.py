"""POST /v1/responses and the response store, in-process on the fake engine (virtual time):
the response object, the typed stream events in order, text.format, previous_response_id,
and what is refused. The fake's default reply is "Hello", ",", " world", "!"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.grammar import json_object_grammar, schema_grammar
from llm_worker_rbee.http.responses.schemas import ResponseObject, ResponseStreamEvent
from llm_worker_rbee.http.responses.store import ResponseStore, StoredResponse
from llm_worker_rbee.testing.asgi import Exchange
from llm_worker_rbee.testing.inprocess import inprocess_worker

PATH = "/v1/responses"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_END = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


async def post(body: dict[str, Any], script: FakeScript | None = None) -> Exchange:
    async with inprocess_worker(script=script) as worker:
        return await worker.request("POST", PATH, body)


def text_of(response: dict[str, Any]) -> str:
    message = response["output"][0]
    assert message["type"] == "message" and message["role"] == "assistant"
    return "".join(part["text"] for part in message["content"])


def stream_events(response: Exchange) -> list[dict[str, Any]]:
    """The events' data, checked: `event:` names its `type`, sequence numbers count from 0,
    every event fits the published schema, and no [DONE] follows."""
    assert response.status == 200 and response.streaming, response.body
    events = [e.json() for e in response.events]
    assert [e.name for e in response.events] == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        ResponseStreamEvent.model_validate(event)
    return events


@pytest.mark.behavior("HTTP-040", "OAI-020", "OAI-021")
async def test_a_string_input_is_answered_with_a_response_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post({"input": "hi", "instructions": "Be kind", "metadata": {"k": "v"}})
    assert response.status == 200, response.body
    body = response.json()
    ResponseObject.model_validate(body)
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["incomplete_details"] is None
    assert body["error"] is None
    assert text_of(body) == "Hello, world!"
    assert body["output"][0]["id"].startswith("msg_")
    assert body["output"][0]["content"][0]["annotations"] == []
    assert body["instructions"] == "Be kind" and body["metadata"] == {"k": "v"}
    assert body["model"] == "fake-model"
    # The transcript "System: Be kind\nUser: hi\nAssistant:" and the BOS, one byte a token.
    prompt_tokens = 1 + len("System: Be kind\nUser: hi\nAssistant:")
    assert body["usage"] == {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + 4,
    }
    assert response.headers["x-request-id"] == "job-1"


@pytest.mark.behavior("OAI-020")
async def test_message_items_with_text_parts_make_the_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(replies={"System: sys\nUser: ab\nAssistant: before\nUser: c\n": ["ok"]})
    items = [
        {"role": "developer", "content": "sys"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "before"}]},
        {"role": "user", "content": "c"},
    ]
    response = await post({"input": items}, script)
    assert response.status == 200, response.body
    assert text_of(response.json()) == "ok"


@pytest.mark.behavior("OAI-022")
async def test_max_output_tokens_makes_an_incomplete_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    response = await post({"input": "hi", "max_output_tokens": 2})
    body = response.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert text_of(body) == "Hello,"
    assert body["usage"]["output_tokens"] == 2 and body["max_output_tokens"] == 2


@pytest.mark.behavior("HTTP-040", "SSE-025")
async def test_a_stream_sends_the_typed_events_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        response = await worker.request("POST", PATH, {"input": "hi", "stream": True})
        events = stream_events(response)
        kinds = [e["type"] for e in events]
        deltas = kinds.count("response.output_text.delta")
        assert deltas >= 1
        assert kinds == [
            *STREAM_ORDER,
            *["response.output_text.delta"] * deltas,
            *STREAM_END,
            "response.completed",
        ]
        created, in_progress = events[0]["response"], events[1]["response"]
        assert created["status"] == in_progress["status"] == "in_progress"
        assert created["output"] == [] and created["usage"] is None
        added = events[2]["item"]
        assert added["status"] == "in_progress" and added["content"] == []
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "Hello, world!"
        done = {e["type"]: e for e in events}
        assert done["response.output_text.done"]["text"] == text
        assert done["response.content_part.done"]["part"]["text"] == text
        assert done["response.output_item.done"]["item"]["status"] == "completed"
        final = done["response.completed"]["response"]
        assert final["id"] == created["id"] and final["status"] == "completed"
        assert text_of(final) == text and final["usage"]["output_tokens"] == 4
        item_ids = {e["item_id"] for e in events if "item_id" in e}
        assert item_ids == {added["id"]}
        # The streamed response is stored as it ended.
        stored = await worker.request("GET", f"{PATH}/{final['id']}")
        assert stored.json() == final


@pytest.mark.behavior("SSE-025", "OAI-022")
async def test_a_stream_cut_at_max_output_tokens_ends_incomplete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = stream_events(await post({"input": "hi", "stream": True, "max_output_tokens": 1}))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert text_of(events[-1]["response"]) == "Hello"


@pytest.mark.behavior("SSE-026")
async def test_a_stream_that_fails_ends_with_response_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(fail_at_steps=frozenset({3}))
    events = stream_events(await post({"input": "hi", "stream": True}, script))
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "engine_error", "message": "generation failed"}


@pytest.mark.parametrize(
    ("text_format", "grammar"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, json_object_grammar()),
        ({"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}, None),
    ],
)
@pytest.mark.behavior("OAI-023")
async def test_text_format_becomes_the_engines_grammar(
    autojump_clock: trio.testing.MockClock, text_format: dict[str, Any], grammar: str | None
) -> None:
    if text_format["type"] == "json_schema":
        grammar = schema_grammar(PERSON)
    async with inprocess_worker() as worker:
        response = await worker.request(
            "POST", PATH, {"input": "hi", "text": {"format": text_format}}
        )
        assert response.status == 200, response.body
        assert [s.grammar for s in worker.engine.admitted] == [grammar]
        assert response.json()["text"]["format"]["type"] == text_format["type"]


@pytest.mark.behavior("OAI-024", "HTTP-041", "HTTP-042")
async def test_previous_response_id_continues_the_stored_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Instructions are not carried over to the next response (as OpenAI): if they were, the
    # first reply would be chosen.
    script = FakeScript(
        replies={
            "System: terse\nUser: hi\nAssistant: Hello, world!": ["carried"],
            "User: hi\nAssistant: Hello, world!\nUser: more\nAssistant:": ["continued"],
        }
    )
    async with inprocess_worker(script=script) as worker:
        first = (
            await worker.request("POST", PATH, {"input": "hi", "instructions": "terse"})
        ).json()
        second = await worker.request(
            "POST", PATH, {"input": "more", "previous_response_id": first["id"]}
        )
        assert second.status == 200, second.body
        assert text_of(second.json()) == "continued"
        assert second.json()["previous_response_id"] == first["id"]
        fetched = await worker.request("GET", f"{PATH}/{first['id']}")
        assert fetched.status == 200 and fetched.json() == first
        deleted = await worker.request("DELETE", f"{PATH}/{first['id']}")
        assert deleted.json() == {"id": first["id"], "object": "response.deleted", "deleted": True}
        for method in ("GET", "DELETE"):
            gone = await worker.request(method, f"{PATH}/{first['id']}")
            assert gone.status == 404 and gone.json()["error"]["code"] == "response_not_found"


@pytest.mark.behavior("OAI-024", "ERR-025")
async def test_store_false_keeps_nothing_and_an_unknown_previous_id_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker() as worker:
        unstored = (await worker.request("POST", PATH, {"input": "hi", "store": False})).json()
        assert unstored["store"] is False
        fetched = await worker.request("GET", f"{PATH}/{unstored['id']}")
        assert fetched.status == 404
        follow = await worker.request(
            "POST", PATH, {"input": "more", "previous_response_id": unstored["id"]}
        )
        assert follow.status == 400
        assert follow.json()["error"]["param"] == "previous_response_id"
        assert follow.json()["error"]["code"] == "previous_response_not_found"


@pytest.mark.behavior("OAI-024")
def test_the_store_forgets_the_oldest_beyond_its_bound() -> None:
    store = ResponseStore(limit=2)
    for name in ("a", "b", "c"):
        store.put(name, StoredResponse({"id": name}, ()))
    assert store.get("a") is None and len(store) == 2
    store.put("b", StoredResponse({"id": "b2"}, ()))  # a rewrite counts as the newest
    store.put("d", StoredResponse({"id": "d"}, ()))
    assert store.get("c") is None
    assert [store.get(n) is not None for n in ("b", "d")] == [True, True]


@pytest.mark.parametrize(
    ("extra", "status", "param", "code"),
    [
        ({"background": True}, 400, "background", "unsupported_parameter"),
        ({"include": ["message.output_text.logprobs"]}, 400, "include", "unsupported_parameter"),
        ({"truncation": "auto"}, 400, "truncation", "unsupported_parameter"),
        ({"tools": [{"type": "web_search"}]}, 400, "tools.0.type", "unsupported_parameter"),
        ({"tool_choice": {"type": "allowed_tools"}}, 400, "tool_choice", "unsupported_parameter"),
        (
            {"input": [{"type": "function_call", "name": "f"}]},
            400,
            "input.0.call_id",
            "missing_required_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            400,
            "input.0.content.0.type",
            "unsupported_input",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            400,
            "input.0.content.0.type",
            "unsupported_input",
        ),
        (
            {"input": [{"type": "web_search_call", "id": "w"}]},
            400,
            "input.0.type",
            "unsupported_input",
        ),
        ({"input": [{"content": "x"}]}, 400, "input.0.role", "missing_required_parameter"),
        ({"input": [{"role": "user"}]}, 400, "input.0.content", "missing_required_parameter"),
        ({"input": [{"role": "bot", "content": "x"}]}, 400, "input.0.role", "invalid_value"),
        ({"input": None}, 400, "input", "invalid_value"),
        ({"max_output_tokens": 0}, 400, "max_output_tokens", "invalid_value"),
        ({"temperature": 3}, 400, "temperature", "invalid_value"),
        ({"text": {"format": {"type": "json_schema"}}}, 400, "text.format", "invalid_value"),
        (
            {
                "text": {
                    "format": {"type": "json_schema", "name": "x", "schema": {"minLength": 10**6}}
                }
            },
            400,
            "text.format",
            "invalid_value",
        ),
        ({"model": "other"}, 404, "model", "model_not_found"),
    ],
)
@pytest.mark.behavior("OAI-025", "ERR-025", "ERR-026")
async def test_what_is_not_supported_is_refused_by_name(
    autojump_clock: trio.testing.MockClock,
    extra: dict[str, Any],
    status: int,
    param: str,
    code: str,
) -> None:
    response = await post({"input": "hi", **extra})
    assert response.status == status, response.body
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.behavior("OAI-025")
async def test_defaults_and_nulls_are_accepted(autojump_clock: trio.testing.MockClock) -> None:
    """What the SDK and other clients send with no meaning: nulls, empty include, reasoning
    without an effort, truncation disabled, fields that are not the API's."""
    body = {
        "input": "hi",
        "include": [],
        "reasoning": {"effort": None},
        "background": False,
        "truncation": "disabled",
        "tools": [],
        "previous_response_id": None,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "x_custom": 1,
    }
    response = await post(body)
    assert response.status == 200, response.body


# --- function tools, on the fake engine with Qwen 2.5's published chat template -----------

QWEN = (Path(__file__).parent / "templates" / "qwen2.5.jinja").read_text()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = [
    "<tool",
    '_call>\n{"name": "get_weather", ',
    '"arguments": {"city": ',
    '"Paris"}}\n</tool_call>',
]
ANSWER_AFTER_RESULT = {"<tool_response>\nsunny\n</tool_response>": ["It is", " sunny."]}


def qwen(reply: list[str | bytes]) -> FakeScript:
    return FakeScript(reply=reply, replies=dict(ANSWER_AFTER_RESULT), chat_template=QWEN)


@pytest.mark.behavior("HTTP-045")
async def test_a_function_call_is_an_output_item(autojump_clock: trio.testing.MockClock) -> None:
    body = {"input": "Weather in Paris?", "tools": [WEATHER]}
    response = await post(body, qwen(["Let me look.", *CALL]))
    assert response.status == 200, response.body
    result = response.json()
    ResponseObject.model_validate(result)
    message, call = result["output"]
    assert message["content"][0]["text"] == "Let me look."
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert result["tools"] == [WEATHER] and result["status"] == "completed"


@pytest.mark.behavior("HTTP-045", "SSE-025")
async def test_a_streamed_function_call(autojump_clock: trio.testing.MockClock) -> None:
    body = {"input": "Weather in Paris?", "tools": [WEATHER], "stream": True}
    events = stream_events(await post(body, qwen(CALL)))
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, done = events[2]["item"], events[-2]["item"]
    assert added["type"] == "function_call" and added["arguments"] == ""
    streamed = "".join(e["delta"] for e in events if "arguments.delta" in e["type"])
    assert json.loads(streamed) == {"city": "Paris"} == json.loads(done["arguments"])
    assert events[-3]["arguments"] == done["arguments"]
    assert events[-1]["response"]["output"] == [done]


@pytest.mark.behavior("HTTP-045", "INF-029")
async def test_a_function_call_cut_by_max_output_tokens_never_shows_its_markup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cut after each of the answer's tokens, whole and streamed: the message item holds only
    the text before the call; the call is a function_call item once its arguments began,
    `incomplete` with them as far as written."""
    async with inprocess_worker(script=qwen(["Let me look.", *CALL])) as worker:
        for limit in range(1, len(CALL) + 1):
            body = {"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required"}
            body["max_output_tokens"] = limit
            whole = (await worker.request("POST", PATH, body)).json()
            ResponseObject.model_validate(whole)
            events = stream_events(await worker.request("POST", PATH, {**body, "stream": True}))
            final = events[-1]["response"]
            assert events[-1]["type"] == "response.incomplete"
            for output in (whole["output"], final["output"]):
                texts = [p["text"] for i in output if i["type"] == "message" for p in i["content"]]
                assert "".join(texts) == "Let me look.", limit
                calls = [i for i in output if i["type"] == "function_call"]
                assert len(calls) == (1 if limit >= 4 else 0), limit
                assert all(c["status"] == "incomplete" for c in calls)
                assert all('{"city": "Paris"}'.startswith(c["arguments"]) for c in calls)


@pytest.mark.behavior("HTTP-045", "OAI-024")
async def test_a_function_result_answers_the_call_through_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with inprocess_worker(script=qwen(CALL)) as worker:
        first = await worker.request("POST", PATH, {"input": "Weather?", "tools": [WEATHER]})
        call = first.json()["output"][0]
        result = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
        # The stored call and its result, or the whole history sent again, read the same.
        chained = await worker.request(
            "POST",
            PATH,
            {"input": [result], "tools": [WEATHER], "previous_response_id": first.json()["id"]},
        )
        history = [{"role": "user", "content": "Weather?"}, call, result]
        whole = await worker.request("POST", PATH, {"input": history, "tools": [WEATHER]})
    for response in (chained, whole):
        assert response.status == 200, response.body
        assert text_of(response.json()) == "It is sunny."


@pytest.mark.parametrize(
    ("choice", "grammar"),
    [("auto", False), ("required", True), ({"type": "function", "name": "get_weather"}, True)],
)
@pytest.mark.behavior("HTTP-045")
async def test_tool_choice_required_or_named_is_enforced_by_a_grammar(
    autojump_clock: trio.testing.MockClock, choice: Any, grammar: bool
) -> None:
    async with inprocess_worker(script=qwen(CALL)) as worker:
        body = {"input": "Weather?", "tools": [WEATHER], "tool_choice": choice}
        response = await worker.request("POST", PATH, body)
        assert response.status == 200, response.body
        [sampling] = worker.engine.admitted
        assert (sampling.grammar is not None) == grammar
        assert response.json()["tool_choice"] == choice


@pytest.mark.behavior("HTTP-045")
async def test_a_forced_call_beside_a_text_format_makes_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The request instructor's RESPONSES_TOOLS mode sends: the function forced and its
    parameters as a json_schema `text.format` too. The forced call's grammar wins, as over
    chat's response_format; under `auto` the pair is still refused (test below)."""
    schema = {**WEATHER["parameters"], "required": ["city"], "additionalProperties": False}
    tool = {**WEATHER, "parameters": schema}
    text_format = {"type": "json_schema", "name": "get_weather", "schema": schema, "strict": True}
    body = {
        "input": "Weather?",
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": text_format},
    }
    async with inprocess_worker(script=qwen(CALL)) as worker:
        response = await worker.request("POST", PATH, body)
        assert response.status == 200, response.body
        [sampling] = worker.engine.admitted
    [call] = response.json()["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert sampling.grammar is not None and "tool_call" in sampling.grammar
    assert response.json()["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"tools": [{"type": "function"}]}, "tools.0.name"),
    ],
)
@pytest.mark.behavior("HTTP-045")
async def test_tool_requests_that_do_not_fit_are_400(
    autojump_clock: trio.testing.MockClock, extra: dict[str, Any], param: str
) -> None:
    response = await post({"input": "Weather?", "tools": [WEATHER], **extra}, qwen(CALL))
    assert response.status == 400, response.body
    assert response.json()["error"]["param"] == param


@pytest.mark.behavior("HTTP-045")
async def test_tool_choice_none_answers_in_text(autojump_clock: trio.testing.MockClock) -> None:
    body = {"input": "Weather?", "tools": [WEATHER], "tool_choice": "none"}
    response = await post(body, qwen(["Sunny."]))
    assert [item["type"] for item in response.json()["output"]] == ["message"]

"""Function tools through the Responses and Messages APIs with the official clients, against
a real worker serving the bundled model's weights with Qwen 2.5's published chat template.
The 270M base model is weak: the first request of each round trip names the function, which
a grammar enforces; the answer after the result is asked for in text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import instructor
import openai
import pytest
from pydantic import BaseModel

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

CITIES = ("Paris", "London", "Tokyo")
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": list(CITIES)}},
    "required": ["city"],
}
ASK = "What is the weather in Paris?"
FUNCTION: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": PARAMETERS,
}
TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": PARAMETERS,
}
GREEDY: dict[str, object] = {"temperature": 0}
MODEL = "qwen2.5"  # the served file's stem
# A forced call of get_weather is at most 88 characters (Qwen's <tool_call> syntax around
# the name and a city from the enum), and a token is at least one: room for it whatever
# the model writes.
CALL_TOKENS = 128


@pytest.fixture
def client(qwen: WorkerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="unused", max_retries=0) as oai:
        yield oai


@pytest.fixture
def claude(qwen: WorkerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=qwen.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.behavior("HTTP-045", "OAI-029")
def test_responses_function_call_round_trip(client: openai.OpenAI) -> None:
    model = MODEL
    first = client.responses.create(
        model=model,
        input=ASK,
        tools=[FUNCTION],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=CALL_TOKENS,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and first.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments)["city"] in CITIES
    result = [{"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"}]
    kwargs: dict[str, Any] = {
        "model": model,
        "tools": [FUNCTION],
        "tool_choice": "none",
        "max_output_tokens": 12,
        "temperature": 0,
    }
    answer = client.responses.create(input=result, previous_response_id=first.id, **kwargs)
    assert [item.type for item in answer.output] == ["message"]  # text, possibly empty
    # The stored question and call come before the result: a longer prompt than alone.
    alone = client.responses.create(input=result, **kwargs)
    assert answer.usage is not None and alone.usage is not None
    assert answer.usage.input_tokens > alone.usage.input_tokens + len(call.arguments) // 4


@pytest.mark.behavior("HTTP-045", "OAI-029")
def test_responses_stream_helper_streams_the_call(client: openai.OpenAI) -> None:
    model = MODEL
    with client.responses.stream(
        model=model,
        input=ASK,
        tools=[FUNCTION],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=CALL_TOKENS,
        temperature=0,
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert "".join(deltas) == call.arguments
    assert json.loads(call.arguments)["city"] in CITIES


@pytest.mark.behavior("HTTP-046", "OAI-029")
def test_messages_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    model = MODEL
    first = claude.messages.create(
        model=model,
        max_tokens=CALL_TOKENS,
        messages=[{"role": "user", "content": ASK}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert isinstance(use.input, dict) and use.input["city"] in CITIES
    answer = claude.messages.create(
        model=model,
        max_tokens=12,
        messages=[
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}],
            },
        ],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "none"},
        extra_body=GREEDY,
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in answer.content] == ["text"]


@pytest.mark.compares_texts
@pytest.mark.behavior("HTTP-046", "OAI-029")
def test_messages_stream_helper_builds_the_tool_use_block(claude: anthropic.Anthropic) -> None:
    """Promise: exact mode (the template workers run --batch-invariant), the same request
    gives the same tokens whatever the slot's cache held (docs/API.md, "Same request, same
    text"): the streamed call is the whole one."""
    model = MODEL
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": CALL_TOKENS,
        "messages": [{"role": "user", "content": ASK}],
        "tools": [TOOL],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "extra_body": GREEDY,
    }
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" == whole.stop_reason
    [streamed] = [block for block in final.content if block.type == "tool_use"]
    [expected] = [block for block in whole.content if block.type == "tool_use"]
    assert (streamed.name, streamed.input) == (expected.name, expected.input)


class Weather(BaseModel):
    """The weather report for a city."""

    city: Literal["Paris", "London", "Tokyo"]
    sunny: bool


@pytest.mark.behavior("HTTP-045")
def test_instructor_responses_tools_mode_returns_the_model(client: openai.OpenAI) -> None:
    """instructor's RESPONSES_TOOLS mode forces its function and sends the same schema as a
    json_schema `text.format`: the forced call's grammar wins, and the call parses."""
    patched = instructor.from_openai(client, mode=instructor.Mode.RESPONSES_TOOLS)
    weather = patched.create(
        model=MODEL,
        response_model=Weather,
        messages=[{"role": "user", "content": "Describe the weather in Paris."}],
        max_tokens=60,
        temperature=0,
    )
    assert isinstance(weather, Weather)

"""The generic tool format end to end: the bundled base model (no chat template, so no tool
format of its own) calls a tool with the openai SDK and with LangChain's `bind_tools`, and
answers once the result is sent back. The 270M base model is weak: the first request names
the function (or requires a call), which the grammar enforces; the answer after the result
is under `auto`, where the grammar lets it call again or reply (the base model calls
again), so only its shape is asserted, and under `none`, a plain reply. Parallel calls are
off: allowed a list, the base model lists calls until max_tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import anthropic
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletion

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

CITIES = ("Paris", "London", "Tokyo")
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": list(CITIES)}},
            "required": ["city"],
        },
    },
}
ASK = {"role": "user", "content": "What is the weather in Paris?"}
# A call is at most 80 characters; a token is at least one.
CALL_TOKENS = 128


def answered(completion: ChatCompletion) -> None:
    """A well-formed answer under `auto`: a reply, or calls of the tool (never JSON text)."""
    choice = completion.choices[0]
    calls = choice.message.tool_calls
    if choice.finish_reason == "tool_calls":
        assert calls and all(call.function.name == "get_weather" for call in calls)
        assert all(json.loads(call.function.arguments)["city"] in CITIES for call in calls)
        return
    assert choice.finish_reason in ("stop", "length") and not calls
    content = choice.message.content or ""
    assert not content.lstrip().startswith('{"')  # the JSON around a reply is not content


@pytest.mark.behavior("HTTP-084")
def test_openai_round_trip_on_a_model_without_a_template(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id
    first = client.chat.completions.create(
        model=model,
        messages=[ASK],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=CALL_TOKENS,
        temperature=0,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1 and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)["city"] in CITIES
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"} for call in calls
    ]
    history = [ASK, choice.message.model_dump(exclude_none=True), *results]
    answer = client.chat.completions.create(
        model=model,
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        parallel_tool_calls=False,
        max_tokens=CALL_TOKENS,
        temperature=0,
    )
    answered(answer)
    # tool_choice none: a plain reply, the history still in the prompt.
    plain = client.chat.completions.create(
        model=model,
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=12,
        temperature=0,
    )
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert isinstance(plain.choices[0].message.content, str)
    assert plain.choices[0].message.tool_calls is None
    # Streamed, the named call arrives as OpenAI's deltas: its name, then its arguments.
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[ASK],  # type: ignore[list-item]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=CALL_TOKENS,
            temperature=0,
            stream=True,
        )
    )
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    assert parts[0].id is not None and parts[0].function is not None
    assert parts[0].function.name == "get_weather"
    assert {p.index for p in parts} == {0}
    arguments = "".join(p.function.arguments or "" for p in parts if p.function)
    assert json.loads(arguments)["city"] in CITIES
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def get_weather(city: Literal["Paris", "London", "Tokyo"]) -> str:
    """The current weather in a city."""
    return f"18 C in {city}"


@pytest.mark.behavior("HTTP-084")
def test_langchain_bind_tools_round_trip_on_a_model_without_a_template(
    worker: WorkerProcess, model_id: str
) -> None:
    llm = ChatOpenAI(
        base_url=f"{worker.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model=model_id,
        max_tokens=CALL_TOKENS,  # type: ignore[call-arg]
        temperature=0,
        max_retries=0,
    )
    asked = HumanMessage("What is the weather in Paris?")
    bound = llm.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False)
    reply = bound.invoke([asked])
    assert isinstance(reply, AIMessage) and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"]["city"] in CITIES
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    answer = llm.bind_tools([get_weather], parallel_tool_calls=False).invoke([asked, reply, result])
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str)
    assert len(answer.tool_calls) <= 1
    assert all(c["name"] == "get_weather" for c in answer.tool_calls)
    assert answer.tool_calls or not answer.content.lstrip().startswith('{"')
    plain = llm.bind_tools([get_weather], tool_choice="none").invoke([asked, reply, result])
    assert isinstance(plain, AIMessage) and not plain.tool_calls  # text, possibly empty


@pytest.mark.behavior("HTTP-083")
def test_responses_and_messages_on_a_model_without_a_template(
    client: openai.OpenAI, worker: WorkerProcess, model_id: str
) -> None:
    function = {"type": "function", **WEATHER["function"]}
    response = client.responses.create(
        model=model_id,
        input="What is the weather in Paris?",
        tools=[function],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=CALL_TOKENS,
        temperature=0,
    )
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in CITIES
    with anthropic.Anthropic(base_url=worker.url, api_key="unused", max_retries=0) as claude:
        message = claude.messages.create(
            model=model_id,
            max_tokens=CALL_TOKENS,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}],
            tool_choice={"type": "tool", "name": "get_weather"},
            extra_body={"temperature": 0},
        )
    assert message.stop_reason == "tool_use"
    [use] = [block for block in message.content if block.type == "tool_use"]
    assert isinstance(use.input, dict) and use.input["city"] in CITIES


@pytest.mark.behavior("HTTP-084")
def test_a_template_that_never_renders_tools_calls_through_it_too(
    serve_template: Callable[[str], WorkerProcess],
) -> None:
    """The bundled weights under Gemma 3's own template, which has no tools."""
    gemma = serve_template("gemma3.jinja")
    try:
        with openai.OpenAI(base_url=f"{gemma.url}/v1", api_key="unused", max_retries=0) as oai:
            first = oai.chat.completions.create(
                model="gemma3",
                messages=[ASK],  # type: ignore[list-item]
                tools=[WEATHER],  # type: ignore[list-item]
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                max_tokens=CALL_TOKENS,
                temperature=0,
            )
            calls = first.choices[0].message.tool_calls
            assert first.choices[0].finish_reason == "tool_calls" and calls and len(calls) == 1
            assert json.loads(calls[0].function.arguments)["city"] in CITIES
            result = {"role": "tool", "tool_call_id": calls[0].id, "content": "18 C"}
            history = [ASK, first.choices[0].message.model_dump(exclude_none=True), result]
            answered(
                oai.chat.completions.create(
                    model="gemma3",
                    messages=history,  # type: ignore[arg-type]
                    tools=[WEATHER],  # type: ignore[list-item]
                    parallel_tool_calls=False,
                    max_tokens=CALL_TOKENS,
                    temperature=0,
                )
            )
    finally:
        gemma.stop()

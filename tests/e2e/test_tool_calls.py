"""Tool calls end to end with the official clients (openai, LangChain, instructor) against
real workers serving copies of the bundled model's weights that carry published chat
templates (tests/templates/). The 270M base model is weak: where a call must happen the
request names the function (or requires a call), which a grammar enforces."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import httpx
import instructor
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from llm_worker_rbee.testing.process import WorkerProcess
from tests.e2e.conftest import TEMPLATE_ARGS, TEMPLATES

pytestmark = pytest.mark.real_model

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]}},
            "required": ["city"],
        },
    },
}
QWEN_ID = "qwen2.5"  # the served file's stem
FORCE_WEATHER: dict[str, Any] = {"type": "function", "function": {"name": "get_weather"}}
# A forced call is at most 102 characters (Weather's, in Qwen's <tool_call> syntax; the
# other families' and get_weather's are shorter), and a token is at least one: room for it
# whatever the model writes.
CALL_TOKENS = 128
ASK = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.fixture
def client(qwen: WorkerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="unused", max_retries=0)


def model_of(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.mark.behavior("OAI-010", "OAI-009")
def test_openai_round_trip(client: openai.OpenAI) -> None:
    model = model_of(client)
    first = client.chat.completions.create(
        model=model,
        messages=[ASK],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=FORCE_WEATHER,  # type: ignore[arg-type]
        max_tokens=CALL_TOKENS,
        temperature=0,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "London", "Tokyo")
    answer = client.chat.completions.create(
        model=model,
        messages=[
            ASK,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=12,
        temperature=0,
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    # Text, possibly empty: the template's end of turn may be what the model writes first.
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].message.tool_calls is None


@pytest.mark.compares_texts
@pytest.mark.behavior("OAI-010", "SSE-020", "SSE-021")
def test_openai_round_trip_streamed(client: openai.OpenAI) -> None:
    """Promise: exact mode (the template workers run --batch-invariant), the same request
    gives the same tokens whatever the slot's cache held (docs/API.md, "Same request, same
    text"): the streamed call is the whole one."""
    model = model_of(client)
    kwargs: dict[str, Any] = {"model": model, "max_tokens": CALL_TOKENS, "temperature": 0}
    whole = client.chat.completions.create(
        messages=[ASK], tools=[WEATHER], tool_choice=FORCE_WEATHER, **kwargs
    )
    chunks = list(
        client.chat.completions.create(
            messages=[ASK], tools=[WEATHER], tool_choice=FORCE_WEATHER, stream=True, **kwargs
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ""
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    assert parts[0].id is not None and parts[0].function is not None
    assert parts[0].function.name == "get_weather"
    arguments = "".join(p.function.arguments or "" for p in parts if p.function)
    expected = whole.choices[0].message.tool_calls
    assert expected is not None and arguments == expected[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    answer = client.chat.completions.create(
        messages=[
            ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": parts[0].id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": parts[0].id, "content": "18 C and sunny"},
        ],
        tools=[WEATHER],
        tool_choice="none",
        stream=True,
        **{**kwargs, "max_tokens": 12},
    )
    answered = [c.choices[0] for c in answer if c.choices]
    assert answered[-1].finish_reason in ("stop", "length")
    assert not any(choice.delta.tool_calls for choice in answered)


def chat_model(worker: WorkerProcess) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{worker.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        model=QWEN_ID,
        max_tokens=CALL_TOKENS,  # type: ignore[call-arg]
        temperature=0,
        max_retries=0,
    )


class Weather(BaseModel):
    """The weather report for a city."""

    city: Literal["Paris", "London", "Tokyo"]
    sunny: bool


def get_weather(city: Literal["Paris", "London", "Tokyo"]) -> str:
    """The current weather in a city."""
    return f"18 C in {city}"


@pytest.mark.behavior("OAI-011")
def test_langchain_bind_tools_round_trip(qwen: WorkerProcess) -> None:
    llm = chat_model(qwen)
    bound = llm.bind_tools([get_weather], tool_choice="get_weather")
    asked = HumanMessage("What is the weather in Paris?")
    reply = bound.invoke([asked])
    assert isinstance(reply, AIMessage) and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"]["city"] in ("Paris", "London", "Tokyo")
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke([asked, reply, result])
    assert isinstance(answer, AIMessage) and not answer.tool_calls  # text, possibly empty


@pytest.mark.behavior("OAI-011")
def test_langchain_structured_output_by_function_calling(qwen: WorkerProcess) -> None:
    llm = chat_model(qwen)
    structured = llm.with_structured_output(Weather, method="function_calling")
    weather = structured.invoke("Describe the weather in Paris.")
    assert isinstance(weather, Weather)


@pytest.mark.behavior("OAI-012")
def test_instructor_default_mode_returns_the_model(client: openai.OpenAI) -> None:
    patched = instructor.from_openai(client)
    weather = patched.chat.completions.create(
        model=model_of(client),
        response_model=Weather,
        messages=[{"role": "user", "content": "Describe the weather in Paris."}],
        max_tokens=CALL_TOKENS,
        temperature=0,
    )
    assert isinstance(weather, Weather)


@pytest.mark.behavior("OAI-013", "INF-030")
@pytest.mark.parametrize("template", ["llama3.2.jinja", "mistral-7b-v0.3.jinja"])
def test_other_families_make_a_forced_call(
    serve_template: Callable[[str], WorkerProcess], template: str
) -> None:
    """Streamed, so the incremental parser sees the family's syntax token by token."""
    worker = serve_template(template)
    try:
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model=model_of(client),
                messages=[ASK],  # type: ignore[list-item]
                tools=[WEATHER, {"type": "function", "function": {"name": "get_time"}}],  # type: ignore[list-item]
                tool_choice="required",
                parallel_tool_calls=False,
                max_tokens=CALL_TOKENS,
                temperature=0,
                stream=True,
            )
        )
    finally:
        worker.stop()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    assert parts[0].function is not None and parts[0].id is not None
    assert {p.index for p in parts} == {0}  # one call, as parallel_tool_calls false asks
    arguments = json.loads("".join(p.function.arguments or "" for p in parts if p.function))
    if parts[0].function.name == "get_weather":
        assert arguments["city"] in ("Paris", "London", "Tokyo")
    else:
        assert (parts[0].function.name, arguments) == ("get_time", {})
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.behavior("CFG-037")
def test_a_chat_template_file_gives_the_model_its_prompt_and_tools() -> None:
    """The bundled model carries no chat template (a plain transcript, no tools); with
    Qwen 2.5's as --chat-template-file it renders Qwen's turns and makes Qwen's calls, as
    the same weights do with the template written into the file (the `qwen` worker)."""
    template = TEMPLATES / "qwen2.5.jinja"
    worker = WorkerProcess([*TEMPLATE_ARGS, "--chat-template-file", str(template)]).start()
    try:
        assert f"chat template: {template}, in place of the model's own" in worker.log()
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model=model_of(client),
            messages=[ASK],  # type: ignore[list-item]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice=FORCE_WEATHER,  # type: ignore[arg-type]
            max_tokens=60,
            temperature=0,
        )
        [call] = reply.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments)["city"] in ("Paris", "London", "Tokyo")  # type: ignore[union-attr]
        with httpx.Client(base_url=worker.url) as http:
            counted = http.post(
                "/v1/messages/count_tokens",
                json={"model": model_of(client), "messages": [ASK]},
            ).json()["input_tokens"]
            tokens = http.post(
                "/v1/tokenize",
                json={"content": QWEN_TURN, "add_special": True},
            ).json()["count"]
        assert counted == tokens  # the prompt is the template's, not the transcript
    finally:
        worker.stop()


# What Qwen 2.5's template makes of ASK with no tools: its default system turn, then ASK.
QWEN_TURN = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
)

"""Thinking on /v1/chat/completions, read through the official openai client on the
in-process worker (fake engine, virtual time): `message.reasoning_content` whole,
`delta.reasoning_content` streamed, a template that opens the block, tool calls read from
the answer only, `chat_template_kwargs`, and `--reasoning-format none`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import trio.testing
from openai.types.chat import ChatCompletionChunk

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.testing.inprocess import InProcessWorker, inprocess_worker

ASK: list[Any] = [{"role": "user", "content": "hi"}]
# The block's markers cut across pieces (tokens), as a model's tokenizer may cut them.
THINKING = ["<th", "ink>", "Two", " plus two.", "</thi", "nk>\n\n", "Four", "."]
# Qwen3-style: the generation prompt opens the block unless `enable_thinking` is false,
# when it writes an empty, closed one (the model then answers at once).
OPENS_THE_BLOCK = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
)
QWEN = (Path(__file__).parent / "templates" / "qwen2.5.jinja").read_text()
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}


def renders_past_thinking(reply: list[str | bytes]) -> FakeScript:
    """A template that writes each turn's `reasoning_content` in brackets before its
    content; the reply is "Seen." once the prompt holds THINKING's turn so rendered."""
    template = (
        "{% for m in messages %}{% if m.reasoning_content %}[{{ m.reasoning_content }}]"
        "{% endif %}{{ m.content }}\n{% endfor %}"
    )
    replies: dict[str, list[str | bytes]] = {"[Two plus two.]Four.": ["Seen."]}
    return FakeScript(reply=reply, replies=replies, chat_template=template)


@asynccontextmanager
async def client(
    script: FakeScript, settings: Settings | None = None
) -> AsyncIterator[tuple[openai.AsyncOpenAI, InProcessWorker]]:
    async with inprocess_worker(settings, script) as worker:
        transport = httpx2.ASGITransport(app=worker.app)
        async with httpx2.AsyncClient(transport=transport) as http:
            yield openai.AsyncOpenAI(base_url="http://in/v1", api_key="k", http_client=http), worker


async def streamed(worker: InProcessWorker, **fields: Any) -> tuple[str, str, list[str]]:
    """The reasoning and content a stream carried, and every delta's text, each chunk read
    by the openai client's own chunk type (its stream iterator, left for the GC to close
    after `[DONE]`, trips trio's async generator check)."""
    body = {"model": "fake-model", "messages": ASK, "stream": True, **fields}
    response = await worker.request("POST", "/v1/chat/completions", body)
    assert response.status == 200 and response.events[-1].data == "[DONE]"
    reasoning = content = ""
    pieces = []
    for event in response.events[:-1]:
        for choice in ChatCompletionChunk.model_validate(event.json()).choices:
            r = getattr(choice.delta, "reasoning_content", None) or ""
            c = choice.delta.content or ""
            reasoning, content = reasoning + r, content + c
            pieces += [r, c]
    return reasoning, content, pieces


@pytest.mark.behavior("HTTP-069")
async def test_thinking_is_reasoning_content_of_the_whole_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with client(FakeScript(reply=list(THINKING))) as (sdk, _):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK)
        message = answer.choices[0].message
        assert message.content == "Four."
        assert getattr(message, "reasoning_content", None) == "Two plus two."
        assert answer.choices[0].finish_reason == "stop"


@pytest.mark.behavior("HTTP-069")
async def test_a_reply_without_thinking_has_no_reasoning_content(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with client(FakeScript(reply=["Hello", "!"])) as (sdk, worker):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK)
        assert answer.choices[0].message.content == "Hello!"
        assert getattr(answer.choices[0].message, "reasoning_content", None) is None
        raw = await worker.request("POST", "/v1/chat/completions", {"messages": ASK})
        assert "reasoning_content" not in raw.json()["choices"][0]["message"]


@pytest.mark.behavior("SSE-029")
async def test_thinking_streams_as_reasoning_content_deltas_without_markup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with client(FakeScript(reply=list(THINKING))) as (_, worker):
        reasoning, content, pieces = await streamed(worker)
        assert (reasoning, content) == ("Two plus two.", "Four.")
        assert not any("<" in piece or ">" in piece for piece in pieces)


@pytest.mark.behavior("HTTP-069", "SSE-029")
async def test_a_template_that_opens_the_block_makes_the_reply_start_inside_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(
        reply=["Hmm", ", four.", "</think>", "\n\n4"], chat_template=OPENS_THE_BLOCK
    )
    async with client(script) as (sdk, worker):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK)
        message = answer.choices[0].message
        assert (getattr(message, "reasoning_content", None), message.content) == ("Hmm, four.", "4")
        reasoning, content, _ = await streamed(worker)
        assert (reasoning, content) == ("Hmm, four.", "4")


@pytest.mark.behavior("HTTP-070")
async def test_chat_template_kwargs_reach_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`enable_thinking: false` makes the template close the block: the reply (picked by
    the prompt the worker rendered) is then all answer."""
    replies: dict[str, list[str | bytes]] = {"<think>\n\n</think>": ["Just 4."]}
    script = FakeScript(
        reply=["Hmm", "</think>", "4"], replies=replies, chat_template=OPENS_THE_BLOCK
    )
    async with client(script) as (sdk, _):
        answer = await sdk.chat.completions.create(
            model="fake-model",
            messages=ASK,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        message = answer.choices[0].message
        assert message.content == "Just 4."
        assert getattr(message, "reasoning_content", None) is None
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk.chat.completions.create(
                model="fake-model", messages=ASK, extra_body={"chat_template_kwargs": [1]}
            )
        assert bad.value.body["param"] == "chat_template_kwargs"  # type: ignore[index]


@pytest.mark.behavior("HTTP-069", "SSE-029")
async def test_tool_calls_are_read_from_the_answer_not_the_thinking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call written while thinking is reasoning text; the one in the answer is the call."""
    thought = '<think>Maybe <tool_call>\n{"name": "get_weather"}\n</tool_call>?</think>'
    script = FakeScript(reply=[thought, CALL], chat_template=QWEN)
    async with client(script) as (sdk, worker):
        answer = await sdk.chat.completions.create(
            model="fake-model",
            messages=ASK,
            tools=[WEATHER],  # type: ignore[list-item]
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert getattr(choice.message, "reasoning_content", None) == thought[7:-8]
        assert choice.message.content is None
        calls = choice.message.tool_calls or []
        assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}]  # type: ignore[union-attr]
        reasoning, content, _ = await streamed(worker, tools=[WEATHER])
        assert (reasoning, content) == (thought[7:-8], "")


@pytest.mark.behavior("CFG-038")
async def test_reasoning_format_none_leaves_the_thinking_in_the_content(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", reasoning_format="none")
    async with client(FakeScript(reply=list(THINKING)), settings) as (sdk, worker):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK)
        message = answer.choices[0].message
        assert message.content == "".join(THINKING)
        assert getattr(message, "reasoning_content", None) is None
        reasoning, content, _ = await streamed(worker)
        assert (reasoning, content) == ("", "".join(THINKING))


@pytest.mark.behavior("INF-067")
async def test_stop_strings_apply_to_the_answer_not_the_thinking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`.` ends the thinking's sentence and the answer's: only the answer's stops it."""
    async with client(FakeScript(reply=list(THINKING))) as (sdk, worker):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK, stop=["."])
        message = answer.choices[0].message
        assert (getattr(message, "reasoning_content", None), message.content) == (
            "Two plus two.",
            "Four",
        )
        reasoning, content, _ = await streamed(worker, stop=["."])
        assert (reasoning, content) == ("Two plus two.", "Four")
    settings = Settings(worker_id="w", reasoning_format="none")
    async with client(FakeScript(reply=list(THINKING)), settings) as (sdk, _):
        answer = await sdk.chat.completions.create(model="fake-model", messages=ASK, stop=["."])
        assert answer.choices[0].message.content == "<think>Two plus two"


@pytest.mark.behavior("INF-070")
async def test_json_output_after_an_opened_block_starts_after_the_thinking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a prompt that opened the block, `response_format`'s grammar is the answer's:
    the engine is told to start it at `</think>` (the fake engine writes what it is told;
    the real one's grammar is tests/e2e/test_published_thinking.py's). A template that does
    not open the block gets its grammar from the first token, as before."""
    reply = ["Some", " thought", "</think>", '{"a": ', "1}"]
    script = FakeScript(reply=reply, chat_template=OPENS_THE_BLOCK)
    async with client(script) as (sdk, worker):
        answer = await sdk.chat.completions.create(
            model="fake-model", messages=ASK, response_format={"type": "json_object"}
        )
        message = answer.choices[0].message
        assert json.loads(message.content or "") == {"a": 1}
        assert getattr(message, "reasoning_content", None) == "Some thought"
        rule = worker.engine.admitted[-1].thinking
        assert rule is not None and (rule.inside, rule.grammar_after) == (True, True)
        await sdk.chat.completions.create(model="fake-model", messages=ASK)
        assert worker.engine.admitted[-1].thinking is None  # no grammar, no budget: no rule
    async with client(FakeScript(reply=['{"a": 1}'])) as (sdk, worker):
        answer = await sdk.chat.completions.create(
            model="fake-model", messages=ASK, response_format={"type": "json_object"}
        )
        assert answer.choices[0].message.content == '{"a": 1}'
        assert worker.engine.admitted[-1].thinking is None


@pytest.mark.behavior("HTTP-073", "HTTP-077", "INF-071")
async def test_reasoning_effort_and_a_thinking_budget_reach_template_and_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`reasoning_effort` is a template variable (chat_template_kwargs may set it
    otherwise); `thinking_token_budget` is the engine's, with where the thinking starts."""
    template = "{{ reasoning_effort | default('unset') }}: {{ messages[0].content }}<think>\n"
    replies: dict[str, list[str | bytes]] = {"high: hi": ["High."], "low: hi": ["Low."]}
    script = FakeScript(reply=["Unset."], replies=replies, chat_template=template)
    async with client(script) as (sdk, worker):
        for fields, expected in (
            ({"reasoning_effort": "high"}, "High."),
            ({"extra_body": {"chat_template_kwargs": {"reasoning_effort": "low"}}}, "Low."),
            ({}, "Unset."),
        ):
            answer = await sdk.chat.completions.create(model="fake-model", messages=ASK, **fields)
            assert getattr(answer.choices[0].message, "reasoning_content", None) == expected
        await sdk.chat.completions.create(
            model="fake-model", messages=ASK, extra_body={"thinking_token_budget": 7}
        )
        rule = worker.engine.admitted[-1].thinking
        assert rule is not None and (rule.inside, rule.budget) == (True, 7)
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.chat.completions.create(
                model="fake-model", messages=ASK, extra_body={"thinking_token_budget": -1}
            )
        assert refused.value.body["param"] == "thinking_token_budget"  # type: ignore[index]


@pytest.mark.behavior("HTTP-071")
async def test_an_assistant_turns_reasoning_content_reaches_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sent back as the worker answered it, the thinking is the template's to render."""
    script = renders_past_thinking(["Not seen."])
    turns: list[Any] = [
        *ASK,
        {"role": "assistant", "content": "Four.", "reasoning_content": "Two plus two."},
        {"role": "user", "content": "And?"},
    ]
    async with client(script) as (sdk, _):
        answer = await sdk.chat.completions.create(model="fake-model", messages=turns)
        assert answer.choices[0].message.content == "Seen."

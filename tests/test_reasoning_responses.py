"""Thinking on the Responses API, read through the official openai client on the in-process
worker (fake engine, virtual time): a `reasoning` output item before the message, whole and
as `response.reasoning_text.*` events, reasoning items sent back in `input`, and
`--reasoning-format none`."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio.testing
from openai.types.responses import Response

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from tests.test_reasoning_http import OPENS_THE_BLOCK, THINKING, client, renders_past_thinking


@pytest.mark.behavior("HTTP-072")
async def test_thinking_is_a_reasoning_item_before_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with client(FakeScript(reply=list(THINKING))) as (sdk, _):
        response = await sdk.responses.create(model="fake-model", input="hi")
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.summary == []
    assert [c.text for c in reasoning.content or []] == ["Two plus two."]
    assert message.type == "message" and response.output_text == "Four."


@pytest.mark.behavior("HTTP-072")
async def test_thinking_streams_as_reasoning_text_events_without_markup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The template opens the block: the reply is thinking until `</think>`.
    script = FakeScript(reply=THINKING[2:], chat_template=OPENS_THE_BLOCK)
    async with client(script) as (_, worker):
        body = {"model": "fake-model", "input": "hi", "stream": True}
        streamed = await worker.request("POST", "/v1/responses", body)
    events = [json.loads(e.data) for e in streamed.events]
    kinds = [e["type"] for e in events]
    thought = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    said = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert (thought, said) == ("Two plus two.", "Four.")
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert not any("think>" in e.get("delta", "") for e in events)


@pytest.mark.behavior("HTTP-072")
async def test_a_reasoning_item_sent_back_reaches_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = renders_past_thinking(["Not seen."])
    turns: list[Any] = [
        {"role": "user", "content": "hi"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "Two plus two."}],
        },
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And?"},
    ]
    async with client(script) as (sdk, _):
        response = await sdk.responses.create(model="fake-model", input=turns)
    assert response.output_text == "Seen."


@pytest.mark.behavior("HTTP-072")
async def test_a_stored_responses_thinking_is_the_next_turns_history(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = renders_past_thinking(list(THINKING))
    async with client(script) as (sdk, _):
        first = await sdk.responses.create(model="fake-model", input="hi")
        second = await sdk.responses.create(
            model="fake-model", input="And?", previous_response_id=first.id
        )
    assert second.output_text == "Seen."


@pytest.mark.behavior("HTTP-072")
async def test_reasoning_format_none_keeps_the_thinking_in_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = Settings(worker_id="w", reasoning_format="none")
    async with client(FakeScript(reply=list(THINKING)), settings) as (sdk, _):
        response = await sdk.responses.create(model="fake-model", input="hi")
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == "".join(THINKING)
    assert isinstance(sdk, openai.AsyncOpenAI)


@pytest.mark.behavior("HTTP-072")
async def test_a_reply_cut_while_thinking_closes_its_reasoning_and_answers_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with client(FakeScript(reply=list(THINKING))) as (_, worker):
        body = {"model": "fake-model", "input": "hi", "stream": True, "max_output_tokens": 3}
        streamed = await worker.request("POST", "/v1/responses", body)
    events = [json.loads(e.data) for e in streamed.events]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(item["type"], item["status"]) for item in done] == [
        ("reasoning", "incomplete"),
        ("message", "incomplete"),
    ]
    assert done[0]["content"] == [{"type": "reasoning_text", "text": "Two"}]
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.output_text == ""


@pytest.mark.behavior("HTTP-073", "HTTP-077")
async def test_reasoning_effort_reaches_the_template_and_the_budget_the_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    template = "{{ reasoning_effort | default('unset') }}: {{ messages[0].content }}"
    replies: dict[str, list[str | bytes]] = {"high: hi": ["High."]}
    script = FakeScript(reply=["Unset."], replies=replies, chat_template=template)
    async with client(script) as (sdk, worker):
        response = await sdk.responses.create(
            model="fake-model",
            input="hi",
            reasoning={"effort": "high", "summary": "auto"},
            extra_body={"thinking_token_budget": 5},
        )
        assert response.output_text == "High."
        rule = worker.engine.admitted[-1].thinking
        assert rule is not None and (rule.inside, rule.budget) == (False, 5)

"""Thinking on Anthropic's Messages API, in-process on the fake engine (virtual time): the
`thinking` block before the text, whole (through the anthropic client) and streamed (its
events checked against the published schema), the budget handed to the engine, no blocks
when thinking is not asked for, and thinking blocks sent back in the history."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx2
import pytest
import trio.testing

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeScript
from llm_worker_rbee.messages.inference import ThinkingRule
from llm_worker_rbee.testing.inprocess import InProcessWorker, inprocess_worker
from tests.test_anthropic_messages import PATH, stream_events
from tests.test_reasoning_http import OPENS_THE_BLOCK

ASK: list[Any] = [{"role": "user", "content": "hi"}]
REPLY = ["Two", " plus two.", "</thi", "nk>\n\n", "Four", "."]
THINK = {"type": "enabled", "budget_tokens": 64}
# DeepSeek-R1's way: the generation prompt always opens the block.
ALWAYS_OPENS = "{% for m in messages %}{{ m.content }}\n{% endfor %}<think>\n"


@asynccontextmanager
async def client(
    script: FakeScript, settings: Settings | None = None
) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, InProcessWorker]]:
    async with inprocess_worker(settings, script) as worker:
        transport = httpx2.ASGITransport(app=worker.app)
        async with httpx2.AsyncClient(transport=transport) as http:
            yield (
                anthropic.AsyncAnthropic(base_url="http://in", api_key="k", http_client=http),
                worker,
            )


def signed(thinking: str) -> dict[str, str]:
    signature = hashlib.sha256(thinking.encode()).hexdigest()
    return {"type": "thinking", "thinking": thinking, "signature": signature}


@pytest.mark.behavior("HTTP-074", "SSE-030")
async def test_asked_for_thinking_is_a_thinking_block_before_the_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=REPLY, chat_template=OPENS_THE_BLOCK)
    async with client(script) as (sdk, worker):
        message = await sdk.messages.create(
            model="fake-model", max_tokens=100, messages=ASK, thinking=THINK
        )
        assert [block.model_dump() for block in message.content] == [
            signed("Two plus two."),
            {"type": "text", "text": "Four.", "citations": None},
        ]
        assert worker.engine.admitted[-1].thinking == ThinkingRule(inside=True, budget=64)
        body = {"model": "fake-model", "max_tokens": 100, "messages": ASK, "stream": True}
        events = stream_events(await worker.request("POST", PATH, {**body, "thinking": THINK}))
    shapes = [
        (e["type"], (e.get("content_block") or e.get("delta") or {}).get("type"))
        for e in events
        if e["type"].startswith("content_block")
    ]
    runs = [shape for i, shape in enumerate(shapes) if i == 0 or shapes[i - 1] != shape]
    assert runs == [
        ("content_block_start", "thinking"),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
        ("content_block_start", "text"),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
    ]
    thought = "".join(
        e["delta"]["thinking"] for e in events if e.get("delta", {}).get("type") == "thinking_delta"
    )
    signature = [e["delta"]["signature"] for e in events if "signature" in e.get("delta", {})]
    text = "".join(e["delta"]["text"] for e in events if "text" in e.get("delta", {}))
    assert (thought, signature, text) == ("Two plus two.", [signed(thought)["signature"]], "Four.")
    assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1]


@pytest.mark.behavior("HTTP-075")
async def test_without_thinking_asked_no_thinking_block_and_an_opened_one_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Not asked: Qwen3's template gets `enable_thinking: false`; a template that opens the
    block anyway gets a budget of 0 (closed at once); thinking written all the same is
    dropped, never text. `display: "omitted"` keeps the block and its signature only."""
    async with client(FakeScript(reply=REPLY, chat_template=ALWAYS_OPENS)) as (sdk, worker):
        message = await sdk.messages.create(model="fake-model", max_tokens=100, messages=ASK)
        assert [block.model_dump() for block in message.content] == [
            {"type": "text", "text": "Four.", "citations": None}
        ]
        assert worker.engine.admitted[-1].thinking == ThinkingRule(inside=True, budget=0)
        omitted = {**THINK, "display": "omitted"}
        message = await sdk.messages.create(
            model="fake-model", max_tokens=100, messages=ASK, thinking=omitted
        )
        block = message.content[0].model_dump()
        assert block == {**signed("Two plus two."), "thinking": ""}
    template = OPENS_THE_BLOCK + "{% if enable_thinking is false %}no{% endif %}"
    replies: dict[str, list[str | bytes]] = {"</think>\n\nno": ["Closed."]}
    script = FakeScript(reply=REPLY, replies=replies, chat_template=template)
    async with client(script) as (sdk, worker):
        message = await sdk.messages.create(model="fake-model", max_tokens=100, messages=ASK)
        assert message.content[0].model_dump()["text"] == "Closed."
        assert worker.engine.admitted[-1].thinking is None


@pytest.mark.behavior("HTTP-076")
async def test_thinking_blocks_in_the_history_reach_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An assistant's `thinking` block is its turn's `reasoning_content` for the template
    (the signature is not checked); `redacted_thinking` is dropped."""
    template = (
        "{% for m in messages %}{% if m.reasoning_content %}[{{ m.reasoning_content }}]"
        "{% endif %}{{ m.content }}\n{% endfor %}"
    )
    replies: dict[str, list[str | bytes]] = {"[Two plus two.]Four.": ["Seen."]}
    script = FakeScript(reply=["Not seen."], replies=replies, chat_template=template)
    turn = [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "Two plus two.", "signature": "any"},
        {"type": "text", "text": "Four."},
    ]
    history: list[Any] = [*ASK, {"role": "assistant", "content": turn}, *ASK]
    async with client(script) as (sdk, _):
        message = await sdk.messages.create(model="fake-model", max_tokens=16, messages=history)
        assert message.content[0].model_dump()["text"] == "Seen."


@pytest.mark.behavior("HTTP-073")
async def test_output_config_effort_reaches_the_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    template = "{{ reasoning_effort | default('unset') }}: {{ messages[0].content }}"
    replies: dict[str, list[str | bytes]] = {"low: hi": ["Low."]}
    script = FakeScript(reply=["Unset."], replies=replies, chat_template=template)
    async with client(script) as (sdk, _):
        message = await sdk.messages.create(
            model="fake-model",
            max_tokens=16,
            messages=ASK,
            extra_body={"output_config": {"effort": "low"}},
        )
        assert message.content[0].model_dump()["text"] == "Low."


@pytest.mark.behavior("HTTP-074")
async def test_a_reply_cut_while_thinking_still_ends_with_a_text_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript(reply=["Two", " plus", " two", " is"], chat_template=OPENS_THE_BLOCK)
    async with client(script) as (sdk, _):
        message = await sdk.messages.create(
            model="fake-model", max_tokens=3, messages=ASK, thinking={**THINK, "budget_tokens": 2}
        )
    assert [block.model_dump() for block in message.content] == [
        signed("Two plus two"),
        {"type": "text", "text": "", "citations": None},
    ]
    assert message.stop_reason == "max_tokens"

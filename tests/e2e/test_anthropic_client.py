"""The official anthropic client's Messages API against the real worker and the bundled
model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema_rs
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Name a colour."}]
# The SDK no longer has sampling arguments; the route still reads them from the body.
GREEDY: dict[str, object] = {"temperature": 0}
# The longest object COLOUR_SCHEMA's grammar accepts is 131 characters (a JSON character is
# at most 6, "\u00e9"), and a token is at least one: room for it whatever the model writes.
COLOUR_TOKENS = 160
COLOUR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"colour": {"type": "string", "maxLength": 16}, "warm": {"type": "boolean"}},
    "required": ["colour", "warm"],
    "additionalProperties": False,
}


@pytest.fixture
def claude(worker: WorkerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=worker.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def exact_claude(exact_worker: WorkerProcess) -> Iterator[anthropic.Anthropic]:
    """On the exact-mode worker, for tests that compare two replies: its promise (the same
    request gives the same tokens whatever the slot's cache held) is the one they rely on;
    the fast mode makes none across cache states (docs/API.md, "Same request, same text")."""
    url = exact_worker.url
    with anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.behavior("HTTP-043", "OAI-026", "OAI-029")
def test_create_answers_a_message(claude: anthropic.Anthropic, model_id: str) -> None:
    message = claude.messages.create(
        model=model_id, max_tokens=8, messages=MESSAGES, system="Answer briefly.", extra_body=GREEDY
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == model_id
    block = message.content[0]
    # Possibly empty: the transcript's next turn ends a reply, and may be what comes first.
    assert block.type == "text" and isinstance(block.text, str)
    assert message.stop_reason in ("end_turn", "max_tokens")
    # 8 unless the message ended first (even at once, on end-of-generation: none).
    tokens = message.usage.output_tokens
    assert tokens == 8 if message.stop_reason == "max_tokens" else tokens <= 8
    assert message.usage.input_tokens > 0


@pytest.mark.compares_texts
@pytest.mark.behavior("SSE-027", "OAI-029")
def test_stream_true_and_the_stream_helper_spell_the_whole_message(
    exact_claude: anthropic.Anthropic, model_id: str
) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): both streams spell the whole message."""
    claude = exact_claude
    whole = claude.messages.create(
        model=model_id, max_tokens=12, messages=MESSAGES, extra_body=GREEDY
    )
    assert whole.content[0].type == "text"
    with claude.messages.create(
        model=model_id, max_tokens=12, messages=MESSAGES, stream=True, extra_body=GREEDY
    ) as events_stream:
        events = list(events_stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == whole.content[0].text
    with claude.messages.stream(
        model=model_id, max_tokens=12, messages=MESSAGES, extra_body=GREEDY
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.compares_texts
@pytest.mark.behavior("OAI-027")
def test_a_stop_sequence_ends_the_message_and_is_named(
    exact_claude: anthropic.Anthropic, model_id: str
) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the request with a stop sequence writes
    the whole message's tokens up to the stop."""
    claude = exact_claude
    # A reply long enough to cut: the transcript's next turn may end one at once, so the
    # first of three questions that gets three characters or more.
    for question in ("Name a colour.", "Count to ten.", "Describe the sea."):
        messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": question}]
        whole = claude.messages.create(
            model=model_id, max_tokens=12, messages=messages, extra_body=GREEDY
        )
        assert whole.content[0].type == "text"
        text = whole.content[0].text
        if len(text) >= 3:
            break
    stop = text[len(text) // 3 : len(text) * 2 // 3]  # its middle third, whatever it says
    cut = claude.messages.create(
        model=model_id, max_tokens=12, messages=messages, extra_body=GREEDY, stop_sequences=[stop]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].type == "text"
    assert cut.content[0].text == text[: text.index(stop)]


@pytest.mark.behavior("OAI-026")
def test_an_output_format_schema_is_enforced(claude: anthropic.Anthropic, model_id: str) -> None:
    message = claude.messages.create(
        model=model_id,
        max_tokens=COLOUR_TOKENS,
        messages=[{"role": "user", "content": "Describe a colour as JSON."}],
        output_config={"format": {"type": "json_schema", "schema": COLOUR_SCHEMA}},
        extra_body={"temperature": 0.9},
    )
    assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    jsonschema_rs.validate(COLOUR_SCHEMA, json.loads(message.content[0].text))


@pytest.mark.behavior("ERR-027", "OAI-029")
def test_bad_requests_raise_the_sdks_error_classes(
    claude: anthropic.Anthropic, model_id: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=model_id, max_tokens=0, messages=MESSAGES)
    assert bad.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": bad.value.body["error"]["message"],  # type: ignore[index]
            "param": "max_tokens",
            "code": "invalid_value",
        },
    }
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-nope", max_tokens=4, messages=MESSAGES)
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model=model_id,
            max_tokens=4,
            messages=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
        )
    assert "image" in refused.value.message

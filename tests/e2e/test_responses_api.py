"""The official openai client's Responses API against the real worker and the bundled model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

INPUT = "Name a colour."
# The longest object COLOUR_SCHEMA's grammar (and Colour's) accepts is 131 characters (a JSON
# character is at most 6, "\u00e9"), and a token is at least one: room for it whatever the
# model writes.
COLOUR_TOKENS = 160
COLOUR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"colour": {"type": "string", "maxLength": 16}, "warm": {"type": "boolean"}},
    "required": ["colour", "warm"],
    "additionalProperties": False,
}


@pytest.fixture
def client(worker: WorkerProcess) -> Iterator[openai.OpenAI]:
    """Closed after each test, so its connections are not left to the collector."""
    with openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0) as oai:
        yield oai


class Colour(BaseModel):
    colour: str = Field(max_length=16)
    warm: bool


@pytest.mark.behavior("HTTP-040", "OAI-021", "OAI-022", "OAI-029")
def test_create_answers_a_response(client: openai.OpenAI, model_id: str) -> None:
    response = client.responses.create(
        model=model_id,
        input=INPUT,
        instructions="Answer in one word.",
        max_output_tokens=6,
        temperature=0,
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.model == model_id and response.instructions == "Answer in one word."
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    # Possibly empty: the transcript's next turn ends a reply, and may be what comes first.
    assert [item.type for item in response.output] == ["message"]
    usage = response.usage
    assert usage is not None
    # 6 unless the response ended first (even at once, on end-of-generation: none).
    assert usage.output_tokens == 6 if response.status == "incomplete" else usage.output_tokens <= 6
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


@pytest.mark.compares_texts
@pytest.mark.behavior("SSE-025", "OAI-029")
def test_a_stream_of_events_spells_the_whole_response(
    exact_client: openai.OpenAI, model_id: str
) -> None:
    """Promise: exact mode, the same request gives the same tokens whatever the slot's cache
    held (docs/API.md, "Same request, same text"): the stream spells the whole response."""
    client = exact_client
    kwargs: dict[str, Any] = {
        "model": model_id,
        "input": INPUT,
        "max_output_tokens": 10,
        "temperature": 0,
    }
    whole = client.responses.create(**kwargs)
    with client.responses.create(stream=True, **kwargs) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    last = "response.completed" if whole.status == "completed" else "response.incomplete"
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        last,
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text


@pytest.mark.behavior("OAI-023", "OAI-029")
def test_the_stream_helper_parses_a_json_schema_reply(client: openai.OpenAI, model_id: str) -> None:
    """`responses.stream(text_format=...)` sends a strict json_schema; the grammar makes the
    reply parse, and the helper's final response carries the parsed object."""
    with client.responses.stream(
        model=model_id,
        input="Describe a colour as JSON.",
        text_format=Colour,
        max_output_tokens=COLOUR_TOKENS,
        temperature=0,
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == text
    assert isinstance(final.output_parsed, Colour)


@pytest.mark.behavior("OAI-023")
def test_a_json_schema_text_format_validates(client: openai.OpenAI, model_id: str) -> None:
    response = client.responses.create(
        model=model_id,
        input="Describe a colour as JSON.",
        text={"format": {"type": "json_schema", "name": "c", "schema": COLOUR_SCHEMA}},
        max_output_tokens=COLOUR_TOKENS,
        temperature=0.9,
    )
    assert response.status == "completed"
    jsonschema_rs.validate(COLOUR_SCHEMA, json.loads(response.output_text))


@pytest.mark.behavior("OAI-024", "HTTP-041", "HTTP-042")
def test_previous_response_id_retrieve_and_delete(client: openai.OpenAI, model_id: str) -> None:
    first = client.responses.create(
        model=model_id, input="My name is Ada.", max_output_tokens=4, temperature=0
    )
    second = client.responses.create(
        model=model_id,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=4,
        temperature=0,
    )
    assert first.usage is not None and second.usage is not None
    # The second prompt holds the first's input and output before its own.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


@pytest.mark.behavior("OAI-025", "ERR-025", "OAI-029")
def test_refusals_raise_the_sdks_error_classes(client: openai.OpenAI, model_id: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=model_id,
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://x.test/a.png"}],
                }
            ],
        )
    assert refused.value.code == "unsupported_input"
    assert refused.value.param == "input.0.content.0.type"
    with pytest.raises(openai.BadRequestError) as tools:
        client.responses.create(model=model_id, input="hi", tools=[{"type": "web_search"}])
    assert tools.value.param == "tools.0.type"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-nope", input="hi")

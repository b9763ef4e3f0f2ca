"""Thinking on the real model under published thinking templates: llama.cpp's copies of
Qwen3.5's and a DeepSeek-R1 distill's (`published_templates`, from the sdist), both of which
open the `<think>` block in the generation prompt. The 270M base model's thinking is
gibberish, so every request sets a small thinking budget: the worker closes the block after
that many tokens, and a grammar (a few words, or JSON under a schema) makes the answer that
follows. What is asserted is where the split falls and the shapes each client reads, never
the model's words."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import litellm  # LITELLM_LOCAL_MODEL_COST_MAP is set in conftest.py, before this import
import openai
import pytest

from llm_worker_rbee.reasoning import FORCED_CLOSE
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

TEMPLATES = ["Qwen3.5-4B.jinja", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"]
BUDGET = 4
MAX_TOKENS = 40
QUESTION = "What is two plus two?"
ASK: list[Any] = [{"role": "user", "content": QUESTION}]
ANSWER_GRAMMAR = 'root ::= "four" | "five" | "six"'
ANSWERS = {"four", "five", "six"}
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["four", "five", "six"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


class Thinker:
    def __init__(self, worker: WorkerProcess) -> None:
        self.url = worker.url
        self.openai = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)
        self.model = self.openai.models.list().data[0].id
        close = httpx.post(f"{worker.url}/v1/tokenize", json={"content": FORCED_CLOSE})
        # The most tokens a reply takes: the budget, the forced close, a short answer.
        self.most_tokens = BUDGET + close.json()["count"] + 16


@pytest.fixture(scope="module", params=TEMPLATES)
def thinker(
    request: pytest.FixtureRequest, published_templates: Path, serve_template: Any
) -> Iterator[Thinker]:
    worker = serve_template(str(published_templates / request.param))
    try:
        yield Thinker(worker)
    finally:
        worker.stop()


def check_thinking(reasoning: str | None) -> str:
    """Some thinking, stripped, without the marker (its words are the model's)."""
    assert reasoning and reasoning == reasoning.strip() and "</think>" not in reasoning
    return reasoning


# litellm builds pydantic schemas of its own TypedDicts on first use, and pydantic warns
# about their ReadOnly items: litellm's affair, not this worker's.
@pytest.mark.filterwarnings("ignore:Items? .*ReadOnly:UserWarning")
@pytest.mark.behavior("INF-070", "INF-071", "SSE-029")
def test_openai_and_litellm_read_thinking_cut_at_its_budget(thinker: Thinker) -> None:
    """The grammar is the answer's: it starts after the block the budget closed."""
    extra = {"grammar": ANSWER_GRAMMAR, "thinking_token_budget": BUDGET}
    ask: dict[str, Any] = {
        "model": thinker.model,
        "messages": ASK,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "extra_body": extra,
    }
    answer = thinker.openai.chat.completions.create(**ask)
    message = answer.choices[0].message
    reasoning = check_thinking(getattr(message, "reasoning_content", None))
    assert message.content in ANSWERS
    assert answer.usage is not None and answer.usage.completion_tokens <= thinker.most_tokens
    streamed = {"reasoning": "", "content": ""}
    for chunk in thinker.openai.chat.completions.create(stream=True, **ask):
        for choice in chunk.choices:
            streamed["reasoning"] += getattr(choice.delta, "reasoning_content", None) or ""
            streamed["content"] += choice.delta.content or ""
    assert streamed == {"reasoning": reasoning, "content": message.content}  # exact mode
    via_litellm = litellm.completion(
        model=f"openai/{thinker.model}",
        api_base=f"{thinker.url}/v1",
        api_key="unused",
        messages=ASK,
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body=extra,
        num_retries=0,
    )
    litellm_message = via_litellm.choices[0].message  # type: ignore[union-attr]
    assert (litellm_message.reasoning_content, litellm_message.content) == (
        reasoning,
        message.content,
    )


@pytest.mark.behavior("INF-070")
def test_json_schema_after_thinking_parses(thinker: Thinker) -> None:
    answer = thinker.openai.chat.completions.create(
        model=thinker.model,
        messages=ASK,
        max_tokens=MAX_TOKENS,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        },
        extra_body={"thinking_token_budget": BUDGET},
    )
    message = answer.choices[0].message
    check_thinking(getattr(message, "reasoning_content", None))
    jsonschema.validate(json.loads(message.content or ""), SCHEMA)


@pytest.mark.behavior("HTTP-072", "HTTP-077")
def test_responses_reasoning_item_then_the_json_answer(thinker: Thinker) -> None:
    ask: dict[str, Any] = {
        "model": thinker.model,
        "input": QUESTION,
        "max_output_tokens": MAX_TOKENS,
        "temperature": 0,
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA}},
        "extra_body": {"thinking_token_budget": BUDGET},
    }
    response = thinker.openai.responses.create(**ask)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    check_thinking(reasoning.content[0].text)
    jsonschema.validate(json.loads(response.output_text), SCHEMA)
    events = list(thinker.openai.responses.create(stream=True, **ask))
    done = [e.item.type for e in events if e.type == "response.output_item.done"]
    assert done == ["reasoning", "message"]
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == response.output_text  # exact mode


@pytest.mark.behavior("HTTP-074", "HTTP-075", "SSE-030")
def test_anthropic_thinking_blocks_whole_and_streamed(thinker: Thinker) -> None:
    """Asked for, the thinking is a block before the text; not asked for, there is none
    (the R1 template's opened block is closed at once, Qwen3.5's is not opened)."""
    client = anthropic.Anthropic(base_url=thinker.url, api_key="unused", max_retries=0)
    output = {"format": {"type": "json_schema", "schema": SCHEMA}}
    ask: dict[str, Any] = {
        "model": thinker.model,
        "max_tokens": MAX_TOKENS,
        "messages": ASK,
        "thinking": {"type": "enabled", "budget_tokens": BUDGET},
        # This client's create() has neither: sent as they are, the worker reads them.
        "extra_body": {"output_config": output, "temperature": 0},
    }
    message = client.messages.create(**ask)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking, text = message.content
    assert thinking.type == "thinking" and text.type == "text"
    check_thinking(thinking.thinking)
    assert thinking.signature == hashlib.sha256(thinking.thinking.encode()).hexdigest()
    jsonschema.validate(json.loads(text.text), SCHEMA)
    with client.messages.stream(**ask) as stream:
        streamed = stream.get_final_message()
    assert [block.model_dump() for block in streamed.content] == [
        block.model_dump() for block in message.content
    ]  # exact mode
    plain = client.messages.create(
        model=thinker.model, max_tokens=MAX_TOKENS, messages=ASK, extra_body=ask["extra_body"]
    )
    assert [block.type for block in plain.content] == ["text"]
    assert plain.content[0].type == "text"
    jsonschema.validate(json.loads(plain.content[0].text), SCHEMA)

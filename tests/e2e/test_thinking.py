"""Thinking split from the answer on the real model: the bundled weights under a Qwen3-style
template whose generation prompt opens the `<think>` block (tests/templates/). After that
block a GBNF `grammar` is the answer's (it starts at `</think>`, as llama.cpp reads it), so
a thinking budget closes the block and the grammar picks the answer. The words are the
model's; what is asserted is only where the split falls."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

# The answer's grammar; the thinking before it is free text, cut at BUDGET tokens.
GRAMMAR = 'root ::= "four" | "five" | "six"'
BUDGET = 3
ANSWERS = {"four", "five", "six"}


@pytest.fixture(scope="module")
def thinker(serve_template: Callable[[str], WorkerProcess]) -> Iterator[openai.OpenAI]:
    worker = serve_template("qwen3-thinking.jinja")
    try:
        yield openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)
    finally:
        worker.stop()


@pytest.mark.behavior("HTTP-069", "SSE-029")
def test_the_real_models_thinking_is_split_from_its_answer(thinker: openai.OpenAI) -> None:
    ask = {
        "model": thinker.models.list().data[0].id,
        "messages": [{"role": "user", "content": "What is two plus two?"}],
        "max_tokens": 32,
        "temperature": 0,
        "extra_body": {"grammar": GRAMMAR, "thinking_token_budget": BUDGET},
    }
    answer = thinker.chat.completions.create(**ask)  # type: ignore[call-overload]
    message = answer.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert reasoning and reasoning == reasoning.strip() and "</think>" not in reasoning
    assert message.content in ANSWERS
    streamed = {"reasoning": "", "content": ""}
    for chunk in thinker.chat.completions.create(stream=True, **ask):  # type: ignore[call-overload]
        for choice in chunk.choices:
            streamed["reasoning"] += getattr(choice.delta, "reasoning_content", None) or ""
            streamed["content"] += choice.delta.content or ""
    assert streamed == {"reasoning": reasoning, "content": message.content}  # exact mode


@pytest.mark.behavior("HTTP-070")
def test_enable_thinking_false_reaches_the_real_template(thinker: openai.OpenAI) -> None:
    """The template closes an empty block in the prompt: the reply is all answer."""
    answer = thinker.chat.completions.create(
        model=thinker.models.list().data[0].id,
        messages=[{"role": "user", "content": "What is two plus two?"}],
        max_tokens=8,
        temperature=0,
        extra_body={
            "grammar": 'root ::= "four" | "five" | "six"',
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    message = answer.choices[0].message
    assert getattr(message, "reasoning_content", None) is None
    assert message.content in ANSWERS

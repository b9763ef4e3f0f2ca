"""Thinking split from the answer on the real model: the bundled weights under a Qwen3-style
template whose generation prompt opens the `<think>` block (tests/templates/), with a GBNF
`grammar` that makes the model close it and answer. The words are the model's (within the
grammar's choices); what is asserted is only where the split falls."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import openai
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model

# Some thinking, the marker, an answer: each a word from a small set, so the reply is short
# and every possible reply has one split.
GRAMMAR = (
    'root ::= word " " word "</think>" answer\n'
    'word ::= "yes" | "no" | "maybe" | "so" | "then"\n'
    'answer ::= "four" | "five" | "six"'
)
THINKING = re.compile(r"(yes|no|maybe|so|then) (yes|no|maybe|so|then)")
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
        "extra_body": {"grammar": GRAMMAR},
    }
    answer = thinker.chat.completions.create(**ask)  # type: ignore[call-overload]
    message = answer.choices[0].message
    reasoning = getattr(message, "reasoning_content", None)
    assert reasoning is not None and THINKING.fullmatch(reasoning), reasoning
    assert message.content in ANSWERS
    streamed = {"reasoning": "", "content": ""}
    for chunk in thinker.chat.completions.create(stream=True, **ask):  # type: ignore[call-overload]
        for choice in chunk.choices:
            streamed["reasoning"] += getattr(choice.delta, "reasoning_content", None) or ""
            streamed["content"] += choice.delta.content or ""
    assert THINKING.fullmatch(streamed["reasoning"]) and streamed["content"] in ANSWERS
    assert "<" not in streamed["reasoning"] + streamed["content"]


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

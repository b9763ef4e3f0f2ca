"""The grammars forcing a tool call, run by llama.cpp's own grammar sampler over the bundled
model's vocabulary (read without its weights): each family's call is accepted token by token
and may end there; a call of another function, or other text, is refused."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from llm_worker_rbee.engine.sampling import TOKEN_DATA
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.tool_calls import ToolChoice, ToolDef, plan_tools

TEMPLATES = Path(__file__).parent / "templates"
WEATHER = ToolDef(
    "get_weather",
    None,
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
)
TIME = ToolDef("get_time")
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="module")
def vocab() -> Iterator[object]:
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(bundled_model_path()).encode(), params)
    assert model
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def accepts(vocab: object, grammar: str, text: str) -> bool:
    """Whether `grammar` lets the model write `text` (as its tokens) and then end."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert sampler, "llama.cpp could not parse the grammar"
    data = text.encode()
    buffer = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, len(buffer), False, False)
    try:
        for token in [*buffer[:n], llama_cpp.llama_vocab_eos(vocab)]:
            one = np.zeros(1, dtype=TOKEN_DATA)
            one["id"] = token
            array = llama_cpp.llama_token_data_array(
                one.ctypes.data_as(llama_cpp.llama_token_data_p), 1, -1, False
            )
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if not np.isfinite(one["logit"][0]):
                return False
            if token != llama_cpp.llama_vocab_eos(vocab):
                llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


def grammar(template: str, choice: ToolChoice, *, parallel: bool = True) -> str:
    text = (TEMPLATES / template).read_text()
    plan = plan_tools(text, [WEATHER, TIME], choice, parallel=parallel)
    assert plan.grammar is not None
    return plan.grammar


NAMED = ToolChoice("named", "get_weather")
REQUIRED = ToolChoice("required")


@pytest.mark.behavior("INF-030", "OAI-007")
@pytest.mark.parametrize(
    ("template", "call", "other"),
    [
        (
            "qwen2.5.jinja",
            HERMES_CALL,
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        ),
        (
            "llama3.2.jinja",
            '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}',
            '{"name": "get_time", "parameters": {}}',
        ),
        (
            "mistral-7b-v0.3.jinja",
            '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
            '[TOOL_CALLS][{"name": "get_time", "arguments": {}}]',
        ),
    ],
)
def test_a_named_choice_takes_that_call_only(
    vocab: object, template: str, call: str, other: str
) -> None:
    named = grammar(template, NAMED)
    assert accepts(vocab, named, call)
    assert not accepts(vocab, named, other)
    assert not accepts(vocab, named, "Sure, let me check the weather.")
    # Arguments follow the parameters: a missing required one, or one not declared, is refused.
    assert not accepts(vocab, named, call.replace('"city": "Paris"', '"town": "Paris"'))
    required = grammar(template, REQUIRED)
    assert accepts(vocab, required, call) and accepts(vocab, required, other)


@pytest.mark.behavior("INF-030")
def test_required_takes_several_calls_unless_parallel_calls_are_off(vocab: object) -> None:
    two = HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Rome")
    assert accepts(vocab, grammar("qwen2.5.jinja", REQUIRED), two)
    assert not accepts(vocab, grammar("qwen2.5.jinja", REQUIRED, parallel=False), two)
    assert not accepts(vocab, grammar("qwen2.5.jinja", NAMED), two)
    mistral_two = (
        '[TOOL_CALLS][{"name": "get_time", "arguments": {}}, '
        '{"name": "get_weather", "arguments": {"city": "Rome"}}]'
    )
    assert accepts(vocab, grammar("mistral-7b-v0.3.jinja", REQUIRED), mistral_two)

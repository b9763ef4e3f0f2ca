"""Forced calls in the formats whose syntax is not JSON alone, on the real model: the
family's grammar and its parser agree token by token (streamed), through the published
template (read from the llama-cpp-python sdist) given as --chat-template-file."""

from __future__ import annotations

import json

import openai
import pytest

from devtools.sdist import llama_cpp_tree
from llm_worker_rbee.testing.process import WorkerProcess
from tests.e2e.conftest import TEMPLATE_ARGS

pytestmark = pytest.mark.real_model

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.behavior("HTTP-091", "HTTP-092")
@pytest.mark.parametrize(
    "template",
    [
        # The prompt ends with `>>>`: the parser starts there too.
        "meetkai-functionary-medium-v3.2",
        # The name outside JSON, the arguments in a ```json block, calls in a sequence.
        "llama-cpp-deepseek-r1",
        # A JSON array whose objects name the function by `tool_name`.
        "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
    ],
)
def test_a_forced_call_streams_and_parses_in_the_template_s_format(template: str) -> None:
    path = llama_cpp_tree() / "models" / "templates" / f"{template}.jinja"
    worker = WorkerProcess([*TEMPLATE_ARGS, "--chat-template-file", str(path)]).start()
    try:
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model=client.models.list().data[0].id,
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[WEATHER, TIME],  # type: ignore[list-item]
                tool_choice="required",
                parallel_tool_calls=False,  # the grammar ends after one call
                max_tokens=200,  # R1's markers are many tokens in this vocabulary
                temperature=0,
                stream=True,
                # R1's template opens a thinking block, and a grammar holds the answer after
                # it (INF-070): a budget of 0 closes the block at once (INF-071), so the
                # forced call is all this test waits for. The others open none: no effect.
                extra_body={"thinking_token_budget": 0},
            )
        )
    finally:
        worker.stop()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    calls: dict[int, tuple[str, str]] = {}
    for part in parts:
        name, arguments = calls.get(part.index, ("", ""))
        function = part.function
        assert function is not None
        calls[part.index] = (name + (function.name or ""), arguments + (function.arguments or ""))
    assert len(calls) == 1
    for name, arguments in calls.values():
        assert (name, json.loads(arguments)) in (
            ("get_weather", {"city": "Paris"}),
            ("get_weather", {"city": "Tokyo"}),
            ("get_time", {}),
        )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

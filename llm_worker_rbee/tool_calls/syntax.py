"""How each family's calls look in the output, for the parser (tool_calls/parser.py).

A family's output is content with blocks of calls in it. A block starts at an `Opener`; its
calls are JSON objects (`{"name": ..., "arguments": {...}}`: one, a JSON array of them, or
one then a closer), or, where the name is written outside JSON (DeepSeek R1, Functionary,
Kimi K2), a `head` that names the function, the arguments' JSON object, then `call_end`.
Markers that only frame content (Functionary's `>>>all`, Command R7B's
`<|START_RESPONSE|>`) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llm_worker_rbee.tool_calls.family import ToolFamily, r1_marker

# object: one call, then `closer` if any; array: a JSON array of calls; sequence: calls,
# each from `call_start`, until `closer`; drop: no call, a marker left out of the content.
Shape = Literal["object", "array", "sequence", "drop"]


@dataclass(frozen=True, slots=True)
class Opener:
    text: str
    shape: Shape
    closer: str = ""
    # Only where the answer starts (after whitespace), or after a call.
    at_start: bool = False
    # A call that names its function outside JSON: the text from the call's start to its
    # arguments' object, the name in group "name"; None: a JSON call object.
    head: re.Pattern[str] | None = None
    # After such a call's arguments: the markup closing it, each part optional.
    call_end: tuple[str, ...] = ()
    # A sequence's further calls start with this.
    call_start: str = ""


# The start of a JSON call object up to its arguments' value: `{"name": "f", "arguments": `
# (OpenAI's `"type"` or Command R7B's `"tool_call_id"` may come first).
JSON_HEAD = re.compile(
    r'\s*\{\s*(?:"(?:type|tool_call_id)"\s*:\s*"(?:[^"\\]|\\.)*"\s*,\s*)?'
    r'"(?:name|tool_name)"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)"\s*,\s*'
    r'"(?:arguments|parameters)"\s*:\s*'
)
NAME_KEYS = ("name", "tool_name")
ARGUMENT_KEYS = ("arguments", "parameters")

_R1_CALL = r1_marker("tool call begin")
_R1_HEAD = re.compile(
    rf"\s*{_R1_CALL}\s*(?:function)?\s*{r1_marker('tool sep')}\s*(?P<name>[^\n<]+?)\s*\n"
    r"\s*```(?:json)?[ \t]*\n"
)
_V3_1_HEAD = re.compile(rf"\s*{_R1_CALL}\s*(?P<name>[^<\s]+)\s*{r1_marker('tool sep')}")
_KIMI_HEAD = re.compile(
    r"\s*<\|tool_call_begin\|>\s*(?:functions\.)?(?P<name>[^:<\s]+)(?::\d+)?\s*"
    r"<\|tool_call_argument_begin\|>"
)

OPENERS: dict[ToolFamily, tuple[Opener, ...]] = {
    ToolFamily.HERMES: (Opener("<tool_call>", "object", "</tool_call>"),),
    ToolFamily.LLAMA3: (
        Opener("<|python_tag|>", "object", at_start=True),
        Opener("{", "object", at_start=True),
    ),
    ToolFamily.MISTRAL: (
        Opener("[TOOL_CALLS]", "array"),
        # A real Mistral model's [TOOL_CALLS] is a control token, which decodes to nothing.
        Opener("[", "array", at_start=True),
    ),
    ToolFamily.DEEPSEEK_R1: (
        Opener(
            r1_marker("tool calls begin"),
            "sequence",
            r1_marker("tool calls end"),
            head=_R1_HEAD,
            call_end=("```", r1_marker("tool call end")),
            call_start=_R1_CALL,
        ),
    ),
    ToolFamily.DEEPSEEK_V3_1: (
        Opener(
            r1_marker("tool calls begin"),
            "sequence",
            r1_marker("tool calls end"),
            head=_V3_1_HEAD,
            call_end=(r1_marker("tool call end"),),
            call_start=_R1_CALL,
        ),
    ),
    ToolFamily.FUNCTIONARY_V3_2: (
        # The prompt ends with `>>>` (the parser starts with it): `all` is content.
        Opener(">>>all\n", "drop"),
        Opener(">>>", "object", head=re.compile(r"(?P<name>[^\s>]+)[ \t]*\n")),
    ),
    ToolFamily.FUNCTIONARY_V3_1: (
        Opener("<function=", "object", "</function>", head=re.compile(r"(?P<name>[^>\s]+)>")),
    ),
    ToolFamily.COMMAND_R7B: (
        Opener("<|START_ACTION|>", "array"),
        Opener("<|END_ACTION|>", "drop"),
        Opener("<|START_RESPONSE|>", "drop"),
        Opener("<|END_RESPONSE|>", "drop"),
    ),
    ToolFamily.FIREFUNCTION_V2: (Opener(" functools", "array"), Opener("functools", "array")),
    ToolFamily.GRANITE: (Opener("<|tool_call|>", "array"),),
    ToolFamily.KIMI_K2: (
        Opener(
            "<|tool_calls_section_begin|>",
            "sequence",
            "<|tool_calls_section_end|>",
            head=_KIMI_HEAD,
            call_end=("<|tool_call_end|>",),
            call_start="<|tool_call_begin|>",
        ),
    ),
}

# Text the parser starts with: the end of the prompt, where the model goes on from.
PROMPT_TAIL: dict[ToolFamily, str] = {ToolFamily.FUNCTIONARY_V3_2: ">>>"}

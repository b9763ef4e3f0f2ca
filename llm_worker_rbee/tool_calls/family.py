"""Which tool-call format a chat template speaks, told from the template's own text.

Each family is how a published template renders tools and past calls, and so how the
model was trained to write a call:

- HERMES: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call
  (Hermes 2 Pro / Hermes 3, Qwen 2.5 / Qwen 3 and their fine-tunes).
- LLAMA3: a bare JSON object `{"name": ..., "parameters": {...}}`, optionally after
  `<|python_tag|>` (Llama 3.1, 3.2, 3.3).
- MISTRAL: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral 7B v0.3,
  Mistral Nemo, Mistral Small).
- GENERIC: no template's own: the fallback for a template none of the above (or no
  template), `{"tool_call": ...}` or `{"response": ...}` JSON under a grammar
  (tools.generic; --tool-fallback).

More formats, told as llama.cpp's common/chat.cpp tells them (`_marked_family`; the
syntax of each in tool_calls/syntax.py, docs/API.md "Tool-call formats"):

- DEEPSEEK_R1: `<|tool calls begin|><|tool call begin|>function<|tool sep|>NAME` then
  the arguments in a ```json block (DeepSeek R1 and its distills; the bars are full-width,
  the spaces U+2581: `r1_marker`).
- DEEPSEEK_V3_1: the same markers, `<|tool call begin|>NAME<|tool sep|>{...}<|tool call end|>`.
- FUNCTIONARY_V3_2: `>>>NAME` then the arguments; `>>>all` then text.
- FUNCTIONARY_V3_1: `<function=NAME>{...}</function>` (Functionary on Llama 3.1).
- COMMAND_R7B: `<|START_ACTION|>[{"tool_call_id": ..., "tool_name": ..., "parameters": ...}]`.
- FIREFUNCTION_V2: ` functools[{"name": ..., "arguments": ...}]`.
- GRANITE: `<|tool_call|>[{"name": ..., "arguments": ...}]` (Granite 3).
- KIMI_K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0` then
  `<|tool_call_argument_begin|>` and the arguments.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from typing import Any

from llm_worker_rbee.tool_calls.spec import ToolCall


class ToolFamily(enum.Enum):
    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"
    DEEPSEEK_R1 = "deepseek_r1"
    DEEPSEEK_V3_1 = "deepseek_v3_1"
    FUNCTIONARY_V3_2 = "functionary_v3_2"
    FUNCTIONARY_V3_1 = "functionary_v3_1"
    COMMAND_R7B = "command_r7b"
    FIREFUNCTION_V2 = "firefunction_v2"
    GRANITE = "granite"
    KIMI_K2 = "kimi_k2"
    GENERIC = "generic"


def r1_marker(words: str) -> str:
    """DeepSeek R1's marker of `words`, in full-width bars with U+2581 for spaces."""
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


class ToolsUnsupported(Exception):
    """The model's template cannot take tools; the message says why, for the client."""


KNOWN_FORMATS = (
    "Hermes/Qwen <tool_call> JSON, Llama 3.x JSON (name and parameters), Mistral [TOOL_CALLS], "
    "DeepSeek R1 and V3.1, Functionary v3.1 and v3.2, Command R7B, FireFunction v2, Granite 3, "
    "Kimi K2"
)
# Markers only one family's templates write, checked in this order (the first found wins).
_MARKERS: tuple[tuple[ToolFamily, tuple[str, ...]], ...] = (
    # V3.1 writes the arguments right after the name and the separator; R1 in a JSON block.
    (ToolFamily.DEEPSEEK_V3_1, (r1_marker("tool sep") + "' + tool['function']['arguments']",)),
    (ToolFamily.DEEPSEEK_R1, (r1_marker("tool calls begin"),)),
    (ToolFamily.FUNCTIONARY_V3_2, (">>>all", ">>>${recipient}")),
    (ToolFamily.FUNCTIONARY_V3_1, ("<function=", "<|start_header_id|>")),
    (ToolFamily.COMMAND_R7B, ("<|START_ACTION|>", "<|START_RESPONSE|>")),
    (ToolFamily.FIREFUNCTION_V2, ("functools[",)),
    (ToolFamily.GRANITE, ("<|tool_call|>",)),
    (ToolFamily.KIMI_K2, ("<|tool_calls_section_begin|>", "<|tool_call_begin|>")),
)
_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


def detect_family(template: str | None) -> ToolFamily:
    """The tool-call family of `template` (None: the plain fallback transcript).

    Raises:
        ToolsUnsupported: no template, a template that never renders tools, or a format
            this worker does not parse.
    """
    if template is None:
        raise ToolsUnsupported(
            "this model has no chat template (it is served with a plain transcript), so it "
            "has no format for tool calls; use a model whose chat template supports tools, "
            'or tool_choice "none" for a plain answer'
        )
    if "tools" not in template and "tool_call" not in template:
        raise ToolsUnsupported(
            "this model's chat template never renders tools, so the model was not trained "
            'to call them; tool_choice "none" gives a plain answer'
        )
    marked = _marked_family(template)
    if marked is not None:
        return marked
    if "<tool_call>" in template:
        return ToolFamily.HERMES
    if "[TOOL_CALLS]" in template:
        return ToolFamily.MISTRAL
    if "<|start_header_id|>" in template and (
        "<|python_tag|>" in template or '"parameters"' in template
    ):
        return ToolFamily.LLAMA3
    raise ToolsUnsupported(
        "this model's chat template writes tool calls in a format this worker does not "
        f'parse (it parses: {KNOWN_FORMATS}); tool_choice "none" gives a plain answer'
    )


def _marked_family(template: str) -> ToolFamily | None:
    """The family whose own markers are all in `template`, if any."""
    for family, markers in _MARKERS:
        if all(marker in template for marker in markers):
            return family
    return None


def template_call_id(call_id: str, family: ToolFamily | None) -> str:
    """The id a template is given for a past call. Mistral's templates refuse any id but
    nine letters or digits, so other ids map to nine hex digits of their hash (the same for
    the call and for the tool message answering it)."""
    if family is not ToolFamily.MISTRAL or _MISTRAL_ID.fullmatch(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


class TemplateArguments(dict[str, Any]):
    """A past call's arguments as templates get them: an object, for `tojson`; a template
    that adds them to text (Functionary v3.2, DeepSeek R1 Distill Llama: `'\\n' + arguments`)
    or prints them gets their JSON text."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: object) -> Any:
        return str(self) + other if isinstance(other, str) else NotImplemented

    def __radd__(self, other: object) -> Any:
        return other + str(self) if isinstance(other, str) else NotImplemented


def template_call(call: ToolCall, family: ToolFamily | None) -> dict[str, Any]:
    """A past call as templates expect it: OpenAI's shape with the arguments as an object
    (templates write them with `tojson`; a JSON text would be quoted twice)."""
    arguments: Any = call.arguments
    try:
        parsed = json.loads(call.arguments)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        arguments = TemplateArguments(parsed)
    return {
        "id": template_call_id(call.id, family),
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }

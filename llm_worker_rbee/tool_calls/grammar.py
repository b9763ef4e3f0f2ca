"""Grammars that make the model call a tool: `tool_choice` `required` or a named function.

The whole output must then be the family's call syntax around a JSON object whose `name`
is one of the allowed functions and whose arguments match that function's `parameters`,
so the call always parses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llm_worker_rbee.grammar import rules_grammar
from llm_worker_rbee.tool_calls.family import ToolFamily, r1_marker
from llm_worker_rbee.tool_calls.spec import ToolChoice, ToolDef

# The families that write the name outside JSON: a call is the text before the arguments
# (NAME stands for the name), the arguments' object, the text after; then the text the block
# starts with, between two calls, and ends with.
_NAMED: dict[ToolFamily, tuple[tuple[str, str], tuple[str, str, str]]] = {
    ToolFamily.DEEPSEEK_R1: (
        (
            f"{r1_marker('tool call begin')}function{r1_marker('tool sep')}NAME\n```json\n",
            f"\n```{r1_marker('tool call end')}",
        ),
        (r1_marker("tool calls begin"), "\n", r1_marker("tool calls end")),
    ),
    ToolFamily.DEEPSEEK_V3_1: (
        (f"{r1_marker('tool call begin')}NAME{r1_marker('tool sep')}", r1_marker("tool call end")),
        (r1_marker("tool calls begin"), "", r1_marker("tool calls end")),
    ),
    # The prompt ends with `>>>`.
    ToolFamily.FUNCTIONARY_V3_2: (("NAME\n", ""), ("", "\n>>>", "")),
    ToolFamily.FUNCTIONARY_V3_1: (("<function=NAME>", "</function>"), ("", "", "")),
    ToolFamily.KIMI_K2: (
        ("<|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>", "<|tool_call_end|>"),
        ("<|tool_calls_section_begin|>", "", "<|tool_calls_section_end|>"),
    ),
}
# The JSON families' blocks: the text before the calls, between two, after them.
_BLOCKS: dict[ToolFamily, tuple[str, str, str]] = {
    ToolFamily.HERMES: ("", "\n", ""),  # each call in its own <tool_call> (tool_grammar)
    # Mistral 7B v0.3 writes a space after [TOOL_CALLS], Nemo none (see tool_grammar).
    ToolFamily.MISTRAL: ("[TOOL_CALLS][", ", ", "]"),
    ToolFamily.LLAMA3: ("", "", ""),
    ToolFamily.COMMAND_R7B: ("<|START_ACTION|>[", ", ", "]<|END_ACTION|>"),
    ToolFamily.FIREFUNCTION_V2: (" functools[", ", ", "]"),
    ToolFamily.GRANITE: ("<|tool_call|>[", ", ", "]"),
}


# Templates that take one call per turn.
_ONE_CALL = (ToolFamily.LLAMA3, ToolFamily.FUNCTIONARY_V3_1)


def _literal(text: str) -> str:
    """`text` as a GBNF string literal (empty text: nothing)."""
    return json.dumps(text, ensure_ascii=False) if text else ""


def arguments_schema(tool: ToolDef) -> dict[str, Any]:
    """The JSON schema of `tool`'s arguments object, undeclared arguments refused."""
    parameters = dict(tool.parameters or {"type": "object", "properties": {}})
    if "properties" in parameters and "additionalProperties" not in parameters:
        parameters["additionalProperties"] = False
    return parameters


def call_schema(family: ToolFamily, tool: ToolDef) -> dict[str, Any]:
    """The JSON schema of one call object of `tool`, as the family writes it."""
    parameters = dict(tool.parameters or {"type": "object", "properties": {}})
    # `$ref`s inside the parameters point at their own root's `$defs`: hoisted to the
    # wrapper, which is now the root they resolve against.
    definitions: dict[str, Any] = {
        k: parameters.pop(k) for k in ("$defs", "definitions") if k in parameters
    }
    # Undeclared arguments would only let a model ramble: a call names the declared ones.
    if "properties" in parameters and "additionalProperties" not in parameters:
        parameters["additionalProperties"] = False
    if family is ToolFamily.COMMAND_R7B:
        properties: dict[str, Any] = {
            "tool_call_id": {"type": "string", "pattern": "^[0-9]{1,3}$"},
            "tool_name": {"const": tool.name},
            "parameters": parameters,
        }
    else:
        key = "parameters" if family is ToolFamily.LLAMA3 else "arguments"
        properties = {"name": {"const": tool.name}, key: parameters}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **definitions,
    }


def tool_grammar(
    family: ToolFamily, tools: Sequence[ToolDef], choice: ToolChoice, *, parallel: bool
) -> str | None:
    """The grammar `choice` needs (None for `auto` and `none`): one call of the named
    function, or for `required` one call of any tool, several when `parallel` (never for
    Llama 3, whose templates take one call per turn).

    Raises:
        GrammarError: a tool's parameters cannot be enforced.
    """
    if choice.mode not in ("required", "named"):
        return None
    chosen = [t for t in tools if choice.mode == "required" or t.name == choice.name]
    many = parallel and choice.mode == "required" and family not in _ONE_CALL
    if family in _NAMED:
        (before, after), block = _NAMED[family]
        schemas = {f"args-{i}": arguments_schema(tool) for i, tool in enumerate(chosen)}
        calls = [
            " ".join(filter(None, (_literal(before.replace("NAME", t.name)), f"args-{i}")))
            + (" " + _literal(after) if after else "")
            for i, t in enumerate(chosen)
        ]
    else:
        block = _BLOCKS[family]
        schemas = {f"call-{i}": call_schema(family, tool) for i, tool in enumerate(chosen)}
        calls = list(schemas)
    call = "( " + " | ".join(calls) + " )"
    if family is ToolFamily.HERMES:
        call = f'"<tool_call>\\n" {call} "\\n</tool_call>"'
    start, between, end = (_literal(part) for part in block)
    if family is ToolFamily.MISTRAL:
        start = '"[TOOL_CALLS]" " "? "["'
    more = f" ( {between} {call} )*" if many else ""
    root = " ".join(filter(None, (start, call + more, end)))
    return rules_grammar(schemas, root)

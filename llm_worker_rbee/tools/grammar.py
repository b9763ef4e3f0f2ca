"""Grammars that make the model call a tool: `tool_choice` `required` or a named function.

The whole output must then be the family's call syntax around a JSON object whose `name`
is one of the allowed functions and whose arguments match that function's `parameters`,
so the call always parses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm_worker_rbee.grammar import rules_grammar
from llm_worker_rbee.tools.family import ToolFamily
from llm_worker_rbee.tools.spec import ToolChoice, ToolDef


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
    key = "parameters" if family is ToolFamily.LLAMA3 else "arguments"
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, key: parameters},
        "required": ["name", key],
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
    schemas = {f"call-{i}": call_schema(family, tool) for i, tool in enumerate(chosen)}
    call = "( " + " | ".join(schemas) + " )"
    many = parallel and choice.mode == "required"
    if family is ToolFamily.HERMES:
        one = f'"<tool_call>\\n" {call} "\\n</tool_call>"'
        root = f'{one} ( "\\n" {one} )*' if many else one
    elif family is ToolFamily.MISTRAL:
        more = f' ( ", " {call} )*' if many else ""
        # Mistral 7B v0.3 writes a space after [TOOL_CALLS], Nemo none.
        root = f'"[TOOL_CALLS]" " "? "[" {call}{more} "]"'
    else:
        root = call
    return rules_grammar(schemas, root)

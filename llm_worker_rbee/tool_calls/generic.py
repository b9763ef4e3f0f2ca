"""The generic tool-call format, for a template that has none of its own (or no template):
llama-server's generic format.

The tools are described to the model in a system message, and its whole answer is one JSON
object under a grammar built from the tools' schemas, even under `auto`: a call
`{"tool_call": {"name": ..., "arguments": {...}}}` (`{"tool_calls": [...]}`, one or more,
where parallel calls are allowed and no function is named) or a reply
`{"response": "..."}` (only under `auto`). Past calls go back into the prompt as that same
JSON in the assistant's turn, and tool results as user turns holding
`{"tool_response": {"tool", "tool_call_id", "content"}}` (the template may know no `tool`
role, and most demand that user and assistant alternate). tools.generic_parser reads the
answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm_worker_rbee.grammar import rules_grammar
from llm_worker_rbee.tool_calls.family import ToolFamily
from llm_worker_rbee.tool_calls.grammar import call_schema
from llm_worker_rbee.tool_calls.spec import ToolCall, ToolChoice, ToolDef


@dataclass(frozen=True, slots=True)
class GenericTools:
    """The generic format's part of one request's prompt."""

    tools: tuple[ToolDef, ...]
    choice: ToolChoice
    parallel: bool

    @property
    def many(self) -> bool:
        """Calls as a `tool_calls` list (parallel calls allowed, no function named)."""
        return self.parallel and self.choice.mode != "named"

    def instructions(self) -> str:
        """The system message describing the tools and the answer's JSON."""
        listed = "\n".join(
            json.dumps(tool.template_value()["function"], ensure_ascii=False) for tool in self.tools
        )
        if self.many:
            call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}]}'
            call += " to call one or more tools"
        else:
            call = '{"tool_call": {"name": "<tool name>", "arguments": {<its arguments>}}}'
            call += " to call a tool"
        if self.choice.mode == "named":
            answer = f"call the tool {self.choice.name!r}: {call}"
        elif self.choice.mode == "required":
            answer = call
        else:
            answer = f'either {call}, or {{"response": "<your reply>"}} to reply to the user'
        return (
            "You can call these tools (each one's `parameters` is the JSON schema of its "
            f"arguments):\n{listed}\n\nAnswer with one JSON object and nothing else: {answer}."
        )

    def call_turn(self, calls: Sequence[ToolCall], content: str) -> str:
        """An assistant turn's past calls as the JSON the model answers with (its text, if
        any, beside them as `content`, as llama.cpp's template polyfill writes it)."""
        objects = [{"name": call.name, "arguments": _arguments(call)} for call in calls]
        turn: dict[str, Any] = (
            {"tool_calls": objects} if self.many or len(objects) > 1 else {"tool_call": objects[0]}
        )
        if content:
            turn["content"] = content
        return json.dumps(turn, ensure_ascii=False)


def result_turn(name: str | None, call_id: str | None, content: str) -> str:
    """A tool result as the user turn that gives it back to the model."""
    result: dict[str, Any] = {}
    if name is not None:
        result["tool"] = name
    if call_id is not None:
        result["tool_call_id"] = call_id
    result["content"] = content
    return json.dumps({"tool_response": result}, ensure_ascii=False)


def generic_grammar(tools: Sequence[ToolDef], choice: ToolChoice, *, parallel: bool) -> str:
    """The grammar of the answer: a call of an allowed function with arguments that match
    its `parameters` (one for a named choice, one or more as a list when `parallel`), or,
    under `auto`, a reply.

    Raises:
        GrammarError: a tool's parameters cannot be enforced.
    """
    chosen = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    definitions: dict[str, dict[str, Any]] = {}
    calls = []
    for tool in chosen:
        schema = call_schema(ToolFamily.GENERIC, tool)
        # `$ref`s resolve against the root, which is now the whole answer.
        for key in ("$defs", "definitions"):
            if key in schema:
                definitions.setdefault(key, {}).update(schema.pop(key))
        calls.append(schema)
    call: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    many = parallel and choice.mode != "named"
    key = "tool_calls" if many else "tool_call"
    value = {"type": "array", "items": call, "minItems": 1} if many else call
    answer: dict[str, Any] = _object(key, value)
    if choice.mode not in ("required", "named"):
        answer = {"anyOf": [answer, _object("response", {"type": "string"})]}
    return rules_grammar({"answer": {**answer, **definitions}}, "answer")


def _object(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": False,
    }


def _arguments(call: ToolCall) -> Any:
    """A past call's arguments as an object (a JSON text that is none stays a string)."""
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments

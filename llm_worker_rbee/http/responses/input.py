"""The Responses API's `input`, `tools` and `tool_choice` as the chat path's messages and
tool definitions, with a 400 naming the item for what this worker does not read."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.responses.schemas import FunctionTool, InputItem, InputPart
from llm_worker_rbee.prompts import ChatMessage
from llm_worker_rbee.tool_calls import ToolCall, ToolChoice, ToolDef

# Content parts an input message may carry, as text.
TEXT_PARTS = frozenset({"input_text", "output_text"})


def input_messages(value: str | list[InputItem]) -> tuple[ChatMessage, ...]:
    """`input` as chat messages: a string is one user message; a `function_call` joins the
    assistant turn before it (or makes one), a `function_call_output` is a `tool` message,
    and a `reasoning` item (an earlier answer's thinking) is the reasoning of the assistant
    turn it leads to, for templates that render past thinking.

    Raises:
        ApiError: 400 naming the item (`input.3.content.1`) for a type this worker does not
            read (images, files, audio, built-in tool calls) or an item without its fields.
    """
    if isinstance(value, str):
        return (ChatMessage("user", value),)
    turns: list[ChatMessage] = []
    for i, item in enumerate(value):
        where = f"input.{i}"
        kind = item.type or "message"
        if kind == "function_call":
            call = ToolCall(
                _required(item.call_id, f"{where}.call_id"),
                _required(item.name, f"{where}.name"),
                _required(item.arguments, f"{where}.arguments"),
            )
            if turns and turns[-1].role == "assistant":
                last = turns[-1]
                turns[-1] = dataclasses.replace(last, tool_calls=(*last.tool_calls, call))
            else:
                turns.append(ChatMessage("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item.output
            if output is None:
                raise _missing(f"{where}.output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            call_id = _required(item.call_id, f"{where}.call_id")
            turns.append(ChatMessage("tool", text, tool_call_id=call_id))
        elif kind == "message":
            role = _required(item.role, f"{where}.role")
            content = item.content
            if content is None:
                raise _missing(f"{where}.content")
            text = content if isinstance(content, str) else _text(content, f"{where}.content")
            if role == "assistant" and turns and turns[-1].reasoning and not turns[-1].content:
                turns[-1] = dataclasses.replace(turns[-1], content=text)  # the thinking's answer
            else:
                turns.append(ChatMessage(role, text))
        elif kind == "reasoning":
            parts = item.content if isinstance(item.content, list) else []
            thinking = "".join(p.text or "" for p in parts if p.type == "reasoning_text")
            turns.append(ChatMessage("assistant", "", reasoning=thinking or None))
        else:
            raise bad_request(
                f"{where}: input items of type {kind!r} are not supported; this worker reads "
                "messages, reasoning, function_call and function_call_output",
                param=f"{where}.type",
                code="unsupported_input",
            )
    return tuple(turns)


T = TypeVar("T")


def _required(value: T | None, where: str) -> T:
    if value is None:
        raise _missing(where)
    return value


def _missing(where: str) -> ApiError:
    return bad_request(f"'{where}' is required", param=where, code="missing_required_parameter")


def _text(parts: list[InputPart], where: str) -> str:
    texts: list[str] = []
    for j, part in enumerate(parts):
        here = f"{where}.{j}"
        if part.type not in TEXT_PARTS:
            raise bad_request(
                f"{here}: content of type {part.type!r} is not supported; the served model "
                "reads text only (input_text, output_text)",
                param=f"{here}.type",
                code="unsupported_input",
            )
        texts.append(_required(part.text, f"{here}.text"))
    return "".join(texts)


def function_tools(tools: list[FunctionTool]) -> list[ToolDef]:
    """The function tools; built-in ones (web_search, file_search, ...) are refused.

    Raises:
        ApiError: 400 naming `tools.N.type` for a tool that is not a function.
    """
    defs: list[ToolDef] = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise bad_request(
                f"tools.{i}: {tool.type!r} tools are not supported; only function tools are",
                param=f"tools.{i}.type",
                code="unsupported_parameter",
            )
        defs.append(
            ToolDef(_required(tool.name, f"tools.{i}.name"), tool.description, tool.parameters)
        )
    return defs


def tool_choice(value: str | dict[str, Any] | None) -> ToolChoice | None:
    """`none`, `auto`, `required` or `{"type": "function", "name"}`; None: the default.

    Raises:
        ApiError: 400 naming `tool_choice` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str) and value in ("none", "auto", "required"):
        return ToolChoice(value)  # type: ignore[arg-type]
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if isinstance(name, str):
            return ToolChoice("named", name)
    raise bad_request(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "name"}; '
        "allowed_tools and built-in tool choices are not supported",
        param="tool_choice",
        code="unsupported_parameter",
    )

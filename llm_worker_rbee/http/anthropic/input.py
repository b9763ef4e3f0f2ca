"""Anthropic's `system` and `messages` as the chat path's messages: text, an assistant's
`tool_use` blocks and a user's `tool_result` blocks, with a 400 naming the block for
anything else."""

from __future__ import annotations

import json

from llm_worker_rbee.http.anthropic.schemas import ContentBlock, InputMessage, SystemBlock
from llm_worker_rbee.http.errors import bad_request
from llm_worker_rbee.prompts import ChatMessage
from llm_worker_rbee.tool_calls import ToolCall


def conversation(
    system: str | list[SystemBlock] | None, messages: list[InputMessage]
) -> tuple[ChatMessage, ...]:
    """`system` and `messages` as chat messages: text blocks joined, an assistant's
    `tool_use` blocks as its calls and its `thinking` blocks as its reasoning (for the
    templates that render past thinking), a user's `tool_result` blocks as `tool` messages.

    Raises:
        ApiError: 400 naming the block (`messages.2.content.0`) for a type this worker does
            not read (images, documents) or a block without its fields.
    """
    turns: list[ChatMessage] = []
    if system is not None:
        text = system if isinstance(system, str) else "".join(b.text for b in system)
        turns.append(ChatMessage("system", text))
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, str):
            turns.append(ChatMessage(message.role, content))
            continue
        texts: list[str] = []
        calls: list[ToolCall] = []
        thoughts: list[str] = []
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            if block.type == "thinking" and message.role == "assistant":
                thoughts.append(_field(block.thinking, f"{where}.thinking"))
            elif block.type == "redacted_thinking" and message.role == "assistant":
                continue  # encrypted by Anthropic: nothing a template could render
            elif block.type == "tool_result" and message.role == "user":
                if texts:  # text before a result is its own user turn
                    turns.append(ChatMessage("user", "".join(texts)))
                    texts = []
                call_id = _field(block.tool_use_id, f"{where}.tool_use_id")
                turns.append(ChatMessage("tool", _result_text(block, where), tool_call_id=call_id))
            elif block.type == "tool_use" and message.role == "assistant":
                arguments = json.dumps(block.input or {}, ensure_ascii=False)
                calls.append(
                    ToolCall(
                        _field(block.id, f"{where}.id"),
                        _field(block.name, f"{where}.name"),
                        arguments,
                    )
                )
            else:
                texts.append(_text(block, where))
        if texts or calls or thoughts:
            reasoning = "\n\n".join(thoughts) or None
            turns.append(
                ChatMessage(
                    message.role, "".join(texts), tool_calls=tuple(calls), reasoning=reasoning
                )
            )
    return tuple(turns)


def _field(value: str | None, where: str) -> str:
    if value is None:
        raise bad_request(f"'{where}' is required", param=where, code="missing_required_parameter")
    return value


def _result_text(block: ContentBlock, where: str) -> str:
    content = block.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(_text(inner, f"{where}.content.{k}") for k, inner in enumerate(content))


def _text(block: ContentBlock, where: str) -> str:
    if block.type != "text":
        raise bad_request(
            f"{where}: content blocks of type {block.type!r} are not supported here; the "
            "served model reads text, thinking and tool_use (assistant) and tool_result (user) "
            "blocks",
            param=f"{where}.type",
            code="unsupported_input",
        )
    return _field(block.text, f"{where}.text")

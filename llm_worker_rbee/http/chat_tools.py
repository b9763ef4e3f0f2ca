"""Tool calls on /v1/chat/completions: the request's tools as a ToolPlan, the history as
ChatMessages, and the parsed output in OpenAI's message and delta shapes."""

from __future__ import annotations

from typing import Any

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.grammar import GrammarError
from llm_worker_rbee.http.errors import bad_request
from llm_worker_rbee.http.schemas import ChatCompletionBody, Message
from llm_worker_rbee.prompts import ChatMessage
from llm_worker_rbee.tool_calls import (
    ArgumentsDelta,
    CallStarted,
    ContentDelta,
    ToolCall,
    ToolChoice,
    ToolChoiceError,
    ToolDef,
    ToolEvent,
    ToolPlan,
    ToolsUnsupported,
    plan_tools,
)


def chat_message(message: Message) -> ChatMessage:
    calls = tuple(
        ToolCall(call.id, call.function.name, call.function.arguments)
        for call in message.tool_calls or ()
    )
    return ChatMessage(
        message.role,
        message.text(),
        tool_calls=calls,
        tool_call_id=message.tool_call_id,
        name=message.name if message.role == "tool" else None,
        reasoning=message.reasoning_content if message.role == "assistant" else None,
    )


def tool_plan(body: ChatCompletionBody, model: ModelHandle, fallback: str) -> ToolPlan:
    """The request's tools for this model (`fallback`: --tool-fallback).

    Raises:
        ApiError: 400 naming `tools` (the template takes none; a duplicate name; parameters
            no grammar can enforce) or `tool_choice` (naming an unknown function; required
            without tools).
    """
    tools = [
        ToolDef(t.function.name, t.function.description, t.function.parameters)
        for t in body.tools or ()
    ]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise bad_request("two tools have the same function name", param="tools")
    choice: ToolChoice | None = None
    if isinstance(body.tool_choice, str):
        choice = ToolChoice(body.tool_choice)
    elif body.tool_choice is not None:
        choice = ToolChoice("named", body.tool_choice.function.name)
    parallel = body.parallel_tool_calls is not False
    try:
        plan = plan_tools(
            model.info.chat_template,
            tools,
            choice,
            parallel=parallel,
            fallback=fallback == "generic",
        )
        if plan.grammar is not None:
            model.vocab.check_grammar(plan.grammar)
    except ToolChoiceError as exc:
        raise bad_request(str(exc), param="tool_choice") from None
    except ToolsUnsupported as exc:
        raise bad_request(str(exc), param="tools", code="tools_not_supported") from None
    except (GrammarError, ValueError) as exc:
        raise bad_request(f"a tool's parameters: {exc}", param="tools") from None
    _check_generic(body, plan)
    return plan


def _check_generic(body: ChatCompletionBody, plan: ToolPlan) -> None:
    """Under `auto` the generic format's grammar holds every answer, a reply too: another
    constraint on the output cannot hold beside it (a forced call's grammar wins, as in
    every family).

    Raises:
        ApiError: 400 `unsupported_parameter` naming the constraint.
    """
    if plan.generic is None or plan.forced:
        return
    for name, present in (
        (
            "response_format",
            body.response_format is not None and body.response_format.type != "text",
        ),
        ("json_schema", body.json_schema is not None),
        ("grammar", body.grammar is not None),
    ):
        if present:
            raise bad_request(
                f"{name} beside tools under tool_choice auto is not supported on this model: "
                "its template has no tool format, so its calls and replies are JSON under "
                f'the generic format\'s grammar; send tool_choice "none" for {name}, or '
                "force the call",
                param=name,
                code="unsupported_parameter",
            )


def message_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [call.openai() for call in calls]


def delta_of(event: ToolEvent) -> dict[str, Any]:
    """One parser event as a chat chunk's `delta`."""
    if isinstance(event, ContentDelta):
        return {"content": event.text}
    if isinstance(event, CallStarted):
        call = {"name": event.name, "arguments": ""}
        return {
            "tool_calls": [
                {"index": event.index, "id": event.id, "type": "function", "function": call}
            ]
        }
    assert isinstance(event, ArgumentsDelta)
    return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}

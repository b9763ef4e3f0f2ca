"""Building chat prompts: the GGUF's own Jinja template, or a plain transcript without one."""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llm_worker_rbee.messages.inference import TURN_HEADER
from llm_worker_rbee.tool_calls.family import (
    ToolFamily,
    ToolsUnsupported,
    detect_family,
    template_call,
    template_call_id,
)
from llm_worker_rbee.tool_calls.generic import GenericTools, result_turn
from llm_worker_rbee.tool_calls.spec import ToolCall, ToolDef

# Base models (like the bundled Gemma 3 270M) carry no chat template. They then get a plain
# transcript, and the next turn marker becomes a stop so the model does not write the
# user's lines too: "\nUser:", and any new line that starts a speaker's turn ("\nStudent:",
# "\nAssistant:"), since base models invent speakers.
FALLBACK_USER_TURN = "\nUser:"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    # An assistant turn's calls, and the call a `tool` message answers.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    # An assistant turn's `reasoning_content`, for templates that render past thinking.
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    text: str
    extra_stops: tuple[str, ...]
    # False when the template already writes the BOS token itself.
    add_special: bool


class TemplateError(Exception):
    """The model's chat template refused the messages (e.g. a role it does not know)."""


def render_chat(
    messages: Sequence[ChatMessage],
    template: str | None,
    *,
    bos: str,
    eos: str,
    tools: Sequence[ToolDef] = (),
    template_kwargs: Mapping[str, Any] | None = None,
    generic: GenericTools | None = None,
) -> ChatPrompt:
    """The prompt for `messages`; `tools` are given to the template as its `tools` list
    (the caller checked that the template takes them, see `tools.plan_tools`). A final
    assistant message without calls is continued (a prefill): the messages before it are
    rendered with the generation prompt and its text follows, so the reply carries on from
    it instead of starting a new turn. `template_kwargs` are more variables for the
    template (the request's `chat_template_kwargs`); those this function sets (the
    messages, the tools, the special tokens) are its own, whatever the kwargs say.
    `generic`: the generic tool format's instructions and history (generic_messages)."""
    prefill = ""
    if messages and messages[-1].role == "assistant" and not messages[-1].tool_calls:
        prefill = messages[-1].content
        messages = messages[:-1]
    if generic is not None:
        messages = generic_messages(messages, generic)
    if template is None:
        text = _transcript(messages) + (" " + prefill if prefill else "")
        return ChatPrompt(text, (FALLBACK_USER_TURN, TURN_HEADER), add_special=True)
    kwargs = template_kwargs or {}
    variables = {k: v for k, v in kwargs.items() if k not in ("tools", "messages")}
    variables.update(add_generation_prompt=True, bos_token=bos, eos_token=eos)
    if tools:
        variables["tools"] = [tool.template_value() for tool in tools]
    try:
        text = _render(template, messages, variables)
    except TemplateError:
        if generic is None or messages[0].role != "system":
            raise
        # A template without a system role: the tools' description opens the first turn.
        text = _render(template, _system_in_first_turn(messages), variables)
    text += prefill
    return ChatPrompt(text, (), add_special=not (bos and text.startswith(bos)))


def _render(template: str, messages: Sequence[ChatMessage], variables: dict[str, Any]) -> str:
    family = _family_or_none(template)
    try:
        return (
            chat_environment()
            .from_string(template)
            .render(**variables, messages=_template_messages(messages, family))
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the model's chat template failed: {exc}") from exc


def chat_environment() -> ImmutableSandboxedEnvironment:
    """Hugging Face's template environment, which published templates are written for
    (sandboxed): `raise_exception`, `strftime_now`, its `tojson`, `{% break %}`."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )

    def raise_exception(message: str) -> Any:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    return env


class TemplateFileError(Exception):
    """--chat-template-file cannot be used; the message is one line naming the flag."""


def read_chat_template(path: Path | None) -> str | None:
    """The template --chat-template-file names (None without the flag), compiled once in
    the environment a model's own template renders in, so one that cannot be used is
    refused at start rather than on every request.

    Raises:
        TemplateFileError: the file cannot be read, is not UTF-8, is empty, or is not a
            template Jinja can compile (a syntax error, an unknown filter or test).
    """
    if path is None:
        return None
    flag = f"--chat-template-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateFileError(f"{flag}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TemplateFileError(f"{flag}: not UTF-8 text") from None
    if not text.strip():
        raise TemplateFileError(f"{flag}: the file is empty")
    try:
        chat_environment().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFileError(f"{flag}: line {exc.lineno}: {exc.message}") from None
    return text


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's `tojson`: keys in order, no HTML escaping (Jinja's own sorts keys
    and writes `<` as `\\u003c`, which is not what the model was trained on). A generator
    (`tools | map(attribute='function')`) is written as the list it yields."""
    if isinstance(value, types.GeneratorType):
        value = list(value)
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _family_or_none(template: str) -> ToolFamily | None:
    try:
        return detect_family(template)
    except ToolsUnsupported:
        return None


def _template_messages(
    messages: Sequence[ChatMessage], family: ToolFamily | None
) -> list[dict[str, Any]]:
    """Messages as templates expect them; only the keys a message has (templates test
    `'tool_calls' in message`). A tool result without a name gets its call's."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [template_call(call, family) for call in m.tool_calls]
            names.update((call.id, call.name) for call in m.tool_calls)
        if m.tool_call_id is not None:
            item["tool_call_id"] = template_call_id(m.tool_call_id, family)
        name = m.name or (names.get(m.tool_call_id) if m.tool_call_id else None)
        if name is not None:
            item["name"] = name
        if m.reasoning is not None:
            item["reasoning_content"] = m.reasoning
        out.append(item)
    return out


def generic_messages(messages: Sequence[ChatMessage], generic: GenericTools) -> list[ChatMessage]:
    """The messages as the generic tool format renders them (tools.generic): its
    instructions after the system message's text (or as one), past calls as the assistant's
    JSON, and tool results as user turns (results in a row, and a user turn right after
    them, as one turn)."""
    out: list[ChatMessage] = []
    names: dict[str, str] = {}
    instructions = generic.instructions()
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        out.append(ChatMessage("system", f"{first.content}\n\n{instructions}"))
        messages = messages[1:]
    else:
        out.append(ChatMessage("system", instructions))
    merging = False
    for m in messages:
        result = m.role == "tool"
        if m.tool_calls:
            names.update((call.id, call.name) for call in m.tool_calls)
            turn = generic.call_turn(m.tool_calls, m.content)
            m = ChatMessage("assistant", turn, reasoning=m.reasoning)
        elif m.role == "tool":
            name = m.name or (names.get(m.tool_call_id) if m.tool_call_id else None)
            m = ChatMessage("user", result_turn(name, m.tool_call_id, m.content))
        if merging and m.role == "user":
            out[-1] = ChatMessage("user", f"{out[-1].content}\n{m.content}")
        else:
            out.append(m)
        merging = result
    return out


def _system_in_first_turn(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    system, rest = messages[0], list(messages[1:])
    if rest and rest[0].role == "user":
        return [ChatMessage("user", f"{system.content}\n\n{rest[0].content}"), *rest[1:]]
    return [ChatMessage("user", system.content), *rest]


def _transcript(messages: Sequence[ChatMessage]) -> str:
    names = {
        "system": "System",
        "developer": "System",
        "user": "User",
        "assistant": "Assistant",
        "tool": "Tool",
    }
    lines = []
    for m in messages:
        text = m.content
        calls = "; ".join(f"called {c.name}({c.arguments})" for c in m.tool_calls)
        if calls:
            text = f"{text} ({calls})" if text else f"({calls})"
        lines.append(f"{names.get(m.role, m.role.title())}: {text}")
    return "\n".join(lines) + "\nAssistant:"

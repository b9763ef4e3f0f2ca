"""Building chat prompts: the GGUF's own Jinja template, or a plain transcript without one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llm_worker_rbee.actors.text import TURN_HEADER

# Base models (like the bundled Gemma 3 270M) carry no chat template. They then get a plain
# transcript, and the next turn marker becomes a stop so the model does not write the
# user's lines too: "\nUser:", and any new line that starts a speaker's turn ("\nStudent:",
# "\nAssistant:"), since base models invent speakers.
FALLBACK_USER_TURN = "\nUser:"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    text: str
    extra_stops: tuple[str, ...]
    # False when the template already writes the BOS token itself.
    add_special: bool


class TemplateError(Exception):
    """The model's chat template refused the messages (e.g. a role it does not know)."""


def render_chat(
    messages: Sequence[ChatMessage], template: str | None, *, bos: str, eos: str
) -> ChatPrompt:
    """The prompt for `messages`. A final assistant message is continued (a prefill): the
    messages before it are rendered with the generation prompt and its text follows, so the
    reply carries on from it instead of starting a new turn."""
    prefill = ""
    if messages and messages[-1].role == "assistant":
        prefill = messages[-1].content
        messages = messages[:-1]
    if template is None:
        text = _transcript(messages) + (" " + prefill if prefill else "")
        return ChatPrompt(text, (FALLBACK_USER_TURN, TURN_HEADER), add_special=True)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> Any:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    try:
        text = env.from_string(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(f"the model's chat template failed: {exc}") from exc
    text += prefill
    return ChatPrompt(text, (), add_special=not (bos and text.startswith(bos)))


def _transcript(messages: Sequence[ChatMessage]) -> str:
    names = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m.role, m.role.title())}: {m.content}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"

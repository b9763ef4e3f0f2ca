"""One chat choice's generated text on its way to the client: the thinking split from the
answer (reasoning.py), then tool calls parsed out of the answer alone, so a call or a
marker written while thinking is never taken for the answer's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_worker_rbee.http.chat_tools import delta_of, message_calls
from llm_worker_rbee.http.schemas import ChatCompletionBody
from llm_worker_rbee.messages.inference import Thinking
from llm_worker_rbee.reasoning import ReasoningFormat, ReasoningSplitter, starts_in_reasoning
from llm_worker_rbee.tool_calls import NO_TOOLS, ToolCall, ToolPlan


def thinking_of(reasoning_format: ReasoningFormat, prompt: str) -> Thinking:
    """Whether a reply's thinking is split off (--reasoning-format), and where it starts:
    inside a block the rendered prompt opened, or at a `<think>` the model writes. After an
    opened block, a grammar applies to the answer alone (translate.thinking_rule)."""
    if reasoning_format == "none":
        return "none"
    return "inside" if starts_in_reasoning(prompt) else "leading"


def template_kwargs(body: ChatCompletionBody) -> dict[str, Any]:
    """`chat_template_kwargs`, with `reasoning_effort` as a variable unless they set it."""
    kwargs: dict[str, Any] = {}
    if body.reasoning_effort is not None:
        kwargs["reasoning_effort"] = body.reasoning_effort
    return kwargs | (body.chat_template_kwargs or {})


@dataclass(frozen=True, slots=True)
class ChatOutput:
    """How a request's chat choices are read: its tools and its thinking (thinking_of)."""

    tools: ToolPlan = NO_TOOLS
    thinking: Thinking = "none"

    def choice(self) -> ChoiceText:
        splitter = None
        if self.thinking != "none":
            splitter = ReasoningSplitter(in_reasoning=self.thinking == "inside")
        return ChoiceText(self.tools, splitter)


# No tools, no split: what a choice of /v1/completions would be, were it read as chat.
PLAIN_CHAT = ChatOutput()


class ChoiceText:
    """Text in, chat `delta`s out (`reasoning_content`, `content`, `tool_calls`); it also
    keeps the whole of each, for the message of an answer that is not streamed."""

    def __init__(self, tools: ToolPlan, splitter: ReasoningSplitter | None) -> None:
        self._splitter = splitter
        self._parser = tools.parser()
        self._reasoning: list[str] = []
        self._content: list[str] = []

    def feed(self, text: str) -> list[dict[str, Any]]:
        """The deltas `text` lets through (none while a marker may be in the making)."""
        if self._splitter is None:
            return self._deltas("", text)
        return self._deltas(*self._splitter.feed(text))

    def finish(self, *, cut: bool) -> list[dict[str, Any]]:
        """The deltas of what was held back, at the end; `cut`: max_tokens ended it."""
        deltas = self._deltas(*self._splitter.finish()) if self._splitter is not None else []
        if self._parser is not None:
            deltas += [delta_of(event) for event in self._parser.finish(cut=cut)]
        return deltas

    def tool_calls(self) -> list[ToolCall]:
        return self._parser.tool_calls() if self._parser is not None else []

    def message(self) -> dict[str, Any]:
        """The assistant message, after `finish`. `reasoning_content` only when there was
        thinking, as llama-server writes it (the openai SDK reads a missing one as None)."""
        calls = self.tool_calls()
        content = self._parser.content if self._parser is not None else "".join(self._content)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content or (None if calls else ""),
            "refusal": None,
        }
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if calls:
            message["tool_calls"] = message_calls(calls)
        return message

    def _deltas(self, reasoning: str, content: str) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        if reasoning:
            self._reasoning.append(reasoning)
            deltas.append({"reasoning_content": reasoning})
        if content and self._parser is not None:
            deltas += [delta_of(event) for event in self._parser.feed(content)]
        elif content:
            self._content.append(content)
            deltas.append({"content": content})
        return deltas

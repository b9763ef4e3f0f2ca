"""Thinking split from the answer: a reply's leading `<think>…</think>` block is reasoning,
what follows is content (llama-server's `--reasoning-format deepseek`, vLLM's reasoning
parsers). Incremental, so a stream can send `reasoning_content` deltas as they are made."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# What the engine writes when a thinking budget runs out (llama.cpp and vLLM force the end
# marker the same way): the block closes on a line of its own and the answer follows.
FORCED_CLOSE = "\n</think>\n\n"

ReasoningFormat = Literal["none", "deepseek"]
_Mode = Literal["start", "reasoning", "after", "content"]


def starts_in_reasoning(prompt: str) -> bool:
    """Whether the reply begins inside a thinking block: Qwen3's and the DeepSeek-R1
    distills' templates end the generation prompt with `<think>` (and a new line), so the
    model writes its thinking and `</think>` without ever writing the opening tag. Qwen3
    with `enable_thinking: false` ends in an empty, closed block instead: not inside."""
    return prompt.rstrip().endswith(THINK_OPEN)


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that could still grow into `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class ThinkingGate:
    """Tells a raw reply's leading thinking block from its answer, as ReasoningSplitter
    does but keeping every character, so stop strings are looked for in the answer alone
    (the engine thread's SequenceText): a stop written while thinking ends nothing. Text
    that may still be a marker (or, at the start, white space before one) is held back."""

    def __init__(self, *, inside: bool) -> None:
        self._mode: _Mode = "reasoning" if inside else "start"
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """The (thinking, answer) raw text released after `text`."""
        buffer, self._held = self._held + text, ""
        if self._mode == "start":
            stripped = buffer.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._mode = "reasoning"
            elif THINK_OPEN.startswith(stripped):
                self._held = buffer
                return "", ""
            else:
                self._mode = "content"
        if self._mode == "reasoning":
            end = buffer.find(THINK_CLOSE)
            if end < 0:
                keep = len(buffer) - _partial_suffix(buffer, THINK_CLOSE)
                self._held = buffer[keep:]
                return buffer[:keep], ""
            self._mode = "content"
            end += len(THINK_CLOSE)
            return buffer[:end], buffer[end:]
        return "", buffer

    def flush(self) -> tuple[str, str]:
        """What was held, at the end: the thinking's end, or a start too short to tell."""
        held, self._held = self._held, ""
        return (held, "") if self._mode == "reasoning" else ("", held)

    @property
    def thinking(self) -> bool:
        """Inside the block now (its end not seen yet)."""
        return self._mode == "reasoning"


class ThinkingBudget:
    """Counts a reply's thinking tokens; once `budget` of them were inside the block and it
    is still open, `close` (FORCED_CLOSE's tokens) is what the sampler must pick next, one
    token a step, in place of the model's choice. Budget 0 on a block the prompt opened
    closes it at the first step: an answer without thinking."""

    def __init__(
        self, *, inside: bool, budget: int, close: Sequence[int], piece: Callable[[int], bytes]
    ) -> None:
        self._gate = ThinkingGate(inside=inside)
        self._left = budget
        self._close = tuple(close)
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._forcing: list[int] = []
        self._spent = False  # the close was forced (once at most)
        self._check()

    def forced(self) -> int | None:
        """The token the reply must continue with, or None: the model's choice."""
        return self._forcing[0] if self._forcing else None

    def accept(self, token: int) -> None:
        """`token` was generated (forced or sampled)."""
        thinking = self._gate.thinking
        self._gate.feed(self._decoder.decode(self._piece(token)))
        if self._forcing:
            if token == self._forcing[0]:
                del self._forcing[0]
            else:  # e.g. a grammar refused it: the model goes on as it will
                self._forcing.clear()
            return
        if thinking:  # a token written inside the block (the opening tag's is not)
            self._left -= 1
        self._check()

    def _check(self) -> None:
        if not self._spent and self._gate.thinking and self._left <= 0:
            self._spent = True
            self._forcing = list(self._close)


class ReasoningSplitter:
    """Splits streamed text pieces into (reasoning, content) deltas.

    Only a block at the start of the reply (after white space) counts: a tag written later
    is part of the answer's text, e.g. an answer that explains the tags. Text that may still
    be part of a marker is held back, so no markup leaks into either side; as llama-server
    does, the reasoning is stripped of surrounding white space and so is the start of the
    content after `</think>`. A reply without the block is all content, unchanged; a block
    left open at the end (the reply was cut) is all reasoning.
    """

    def __init__(self, *, in_reasoning: bool = False) -> None:
        self._mode: _Mode = "reasoning" if in_reasoning else "start"
        self._held = ""
        # Nothing of the reasoning sent yet: its leading white space is dropped.
        self._reasoning_started = False

    def feed(self, text: str) -> tuple[str, str]:
        """The (reasoning, content) that is safe to release after `text`."""
        buffer = self._held + text
        self._held = ""
        reasoning = content = ""
        if self._mode == "start":
            stripped = buffer.lstrip()
            if stripped.startswith(THINK_OPEN):
                self._mode = "reasoning"
                buffer = stripped[len(THINK_OPEN) :]
            elif THINK_OPEN.startswith(stripped):  # white space, or the tag's beginning
                self._held = buffer
                return "", ""
            else:
                self._mode = "content"
        if self._mode == "reasoning":
            reasoning, buffer = self._reasoning(buffer)
        if self._mode == "after":
            buffer = buffer.lstrip()
            if buffer:
                self._mode = "content"
        if self._mode == "content":
            content = buffer
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What was held back, at the end of the reply: an unterminated block's end is
        reasoning; a reply too short to tell is content."""
        held, self._held = self._held, ""
        if self._mode == "reasoning":
            return self._strip_start(held.rstrip()), ""
        if self._mode == "start":
            return "", held
        return "", ""

    def _reasoning(self, buffer: str) -> tuple[str, str]:
        """Reasoning released from `buffer`, and the rest of it once the block closed."""
        end = buffer.find(THINK_CLOSE)
        if end >= 0:
            self._mode = "after"
            reasoning = self._strip_start(buffer[:end].rstrip())
            return reasoning, buffer[end + len(THINK_CLOSE) :]
        # Held: a possible `</think>` in the making, and the white space before it (which
        # is dropped if the block closes there).
        keep = len(buffer) - _partial_suffix(buffer, THINK_CLOSE)
        keep = len(buffer[:keep].rstrip())
        self._held = buffer[keep:]
        return self._strip_start(buffer[:keep]), ""

    def _strip_start(self, reasoning: str) -> str:
        if not self._reasoning_started:
            reasoning = reasoning.lstrip()
            self._reasoning_started = bool(reasoning)
        return reasoning

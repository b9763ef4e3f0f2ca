"""The decode loop's output step: one sequence's text work, done as each token is made.

UTF-8 assembly, stop strings, `min_tokens` and logprobs are handled on the engine thread in
the step that sampled the token (as llama-server's `process_token` and vLLM's output
processor do), so a stop string ends its sequence before the engine's next step.
"""

from __future__ import annotations

from llm_worker_rbee.messages.inference import SequenceEnd, TextOutput, Thinking, TokenLogprobs
from llm_worker_rbee.pipeline.text import PieceDecoder, StopMatcher
from llm_worker_rbee.reasoning import ThinkingGate


class SequenceText:
    """Turns one sequence's tokens into text a client may see, holding back what is not yet
    safe (half a character, a possible stop string) together with its tokens' count and
    logprobs, which go out with the next text (or the end)."""

    def __init__(
        self, seq_id: int, stop: tuple[str, ...], min_tokens: int, thinking: Thinking = "none"
    ) -> None:
        self._seq_id = seq_id
        self._decoder = PieceDecoder()
        self._stops = StopMatcher(stop)
        # Stop strings apply to the answer: a thinking block before it is let through.
        self._gate = None if thinking == "none" else ThinkingGate(inside=thinking == "inside")
        # vLLM's rule: stop strings are not looked for in the first `min_tokens` tokens.
        self._min_tokens = min_tokens
        self._seen = 0
        self._text = ""
        self._tokens = 0
        self._logprobs: list[TokenLogprobs] = []

    @property
    def stopped(self) -> bool:
        """A stop string was found: the sequence must end now."""
        return self._stops.matched is not None

    @property
    def matched_stop(self) -> str | None:
        """The stop string that was found, if any."""
        return self._stops.matched

    def add(self, piece: bytes, logprobs: TokenLogprobs | None) -> None:
        self._seen += 1
        self._tokens += 1
        if logprobs is not None:
            self._logprobs.append(logprobs)
        self._text += self._release(self._decoder.feed(piece))

    def finish(self) -> None:
        """The sequence ended: what was held back can no longer become a stop string."""
        self._text += self._release(self._decoder.flush())
        if self._gate is not None:
            thinking, answer = self._gate.flush()
            self._text += thinking + self._stops.feed(answer)
        self._text += self._stops.flush()

    def take(self, cached_tokens: int, end: SequenceEnd | None = None) -> TextOutput | None:
        """The ready text since the last call, if any (always one at the end)."""
        if not self._text and end is None:
            return None
        output = TextOutput(
            self._seq_id, self._text, self._tokens, tuple(self._logprobs), cached_tokens, end
        )
        self._text = ""
        self._tokens = 0
        self._logprobs = []
        return output

    def _release(self, text: str) -> str:
        thinking = ""
        if self._gate is not None:
            thinking, text = self._gate.feed(text)
        if self._seen <= self._min_tokens:
            return thinking + text
        return thinking + self._stops.feed(text)

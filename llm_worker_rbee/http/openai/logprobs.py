"""Per-token logprobs in OpenAI's two shapes: chat's `content` list, completions' columns.

The numbers are the model's raw distribution (log-softmax of the logits, before logit bias,
penalties, temperature or truncation); see docs/API.md.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

from llm_worker_rbee.messages.inference import TokenLogprob, TokenLogprobs


def token_text(piece: bytes) -> str:
    """A token as text; a piece that is not whole UTF-8 is written as OpenAI does,
    `bytes:\\xe2\\x80` (its `bytes` field has the exact bytes either way)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def _chat_token(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": token_text(entry.piece), "logprob": entry.logprob, "bytes": list(entry.piece)}


def chat_logprobs(entries: Sequence[TokenLogprobs]) -> dict[str, Any]:
    """`choices[].logprobs` of a chat completion (or chunk) covering `entries`."""
    content = [
        {**_chat_token(e.chosen), "top_logprobs": [_chat_token(t) for t in e.top]} for e in entries
    ]
    return {"content": content, "refusal": None}


class CompletionLogprobs:
    """`choices[].logprobs` of a completion, chunk by chunk: text offsets run on across
    calls (characters into the choice's text, `start` being where generation begins)."""

    def __init__(self, start: int = 0) -> None:
        self._offset = start
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def render(self, entries: Sequence[TokenLogprobs]) -> dict[str, Any]:
        tokens: list[str] = []
        token_logprobs: list[float] = []
        top_logprobs: list[dict[str, float]] = []
        text_offset: list[int] = []
        for entry in entries:
            chosen = entry.chosen
            text_offset.append(self._offset)
            # A character split across tokens counts where it ends, as the text shows it.
            self._offset += len(self._decoder.decode(chosen.piece))
            tokens.append(token_text(chosen.piece))
            token_logprobs.append(chosen.logprob)
            # OpenAI: the k likeliest, and always the sampled token (so up to k + 1).
            top = {token_text(t.piece): t.logprob for t in entry.top}
            top.setdefault(token_text(chosen.piece), chosen.logprob)
            top_logprobs.append(top)
        return {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": text_offset,
        }

"""Draft tokens by prompt lookup: the tokens that followed the latest earlier occurrence of
a sequence's last few tokens, in its own prompt or output (vLLM's n-gram proposer,
llama-server's `ngram-simple`). Text that repeats its prompt (code edits, quotes, JSON that
echoes keys) gets drafts that the target model then accepts several at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

# N-gram lengths tried, longest first: a longer match is a better predictor; a 1-gram
# matches almost anywhere and would mostly propose drafts that fail.
SIZES = (3, 2)
# Draft length bounds, and where a sequence starts: one a step costs a row of the batch.
MIN_DRAFT = 1
MAX_DRAFT = 16
FIRST_DRAFT = 4
# Draft rows one fast-mode step may add in all, shared by its streams. Each is a row of
# logits over the whole vocabulary (262k for Gemma 3: the output layer is most of a small
# model's work), so past a handful of rows drafts cost what they save.
DRAFT_ROWS = 16


class NgramDrafter:
    """A sequence's tokens so far and, for each n-gram of them, where its latest occurrence
    that has a follower ended; proposes drafts in O(1) a step and adapts their length to
    how many of its drafts the model accepted."""

    def __init__(self, tokens: Iterable[int], max_draft: int = MAX_DRAFT) -> None:
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._max = max_draft
        self.length = min(FIRST_DRAFT, max_draft)
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        history, index = self._tokens, self._index
        for token in tokens:
            end = len(history)
            for n in SIZES:
                if end >= n:  # the n-gram ending here is followed by `token`, at `end`
                    index[tuple(history[end - n : end])] = end
            history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to min(`limit`, the current length) tokens that followed the latest earlier
        occurrence of the longest matching tail; [] when nothing matches."""
        limit = min(limit, self.length)
        history = self._tokens
        if limit <= 0:
            return []
        for n in SIZES:
            if len(history) > n:
                start = self._index.get(tuple(history[-n:]))
                if start is not None:
                    return history[start : start + limit]
        return []

    def accepted(self, drafted: int, kept: int) -> None:
        """Adapts the next draft's length: doubled after a draft kept whole, else what was
        kept plus one (a sequence that stopped echoing drafts one token)."""
        if drafted == 0:
            return
        if kept == drafted:
            self.length = min(self._max, max(self.length, drafted) * 2)
        else:
            self.length = max(MIN_DRAFT, min(self._max, kept + 1))

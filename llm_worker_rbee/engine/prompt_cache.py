"""The llama engine's prompt-cache snapshot: which free slot a new prompt should get.

A slot keeps its KV cells after its sequence ends; the next prompt admitted there keeps
the longest prefix they share. The engine publishes a `SlotCaches` after each change, and
the SlotScheduler asks it on the trio thread, never the engine (engine/base.py:
PromptCacheView).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import overload

# A shared prefix shorter than this (a BOS and a template header) is not worth taking
# another conversation's cache for: such prompts go to the least recently used free slot.
MIN_REUSE_TOKENS = 8


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class GrownPrefix(Sequence[int]):
    """The tokens a list held when this was made, where the list only ever grows (a running
    sequence's: the engine thread appends each decoded token and never changes one). Those
    first tokens never change, so the trio thread may read them while the engine appends,
    and a snapshot need not copy every running sequence's tokens at every step. `upto`
    keeps fewer of them (the exact mode offers only the cells a prompt may reuse)."""

    __slots__ = ("_n", "_tokens")

    def __init__(self, tokens: list[int], upto: int | None = None) -> None:
        self._tokens = tokens
        self._n = len(tokens) if upto is None else min(upto, len(tokens))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return self._tokens[: self._n][index]
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._tokens[index if index >= 0 else self._n + index]


@dataclass(frozen=True)
class SlotCaches:
    """The tokens each slot's cells hold, and when each slot was last used.

    Attributes:
        held: slot -> the tokens its cells hold: an idle slot's whole cache; a running
            sequence's tokens so far, prompt and generated (its slot may already be free
            for the scheduler while its Cancel is on the way: a client that leaves and
            comes back with the text it saw finds it), as a `GrownPrefix`.
        last_used: slot -> the order its last sequence ended in (higher: more recent).
    """

    held: Mapping[int, Sequence[int]] = field(default_factory=lambda: MappingProxyType({}))
    last_used: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int:
        """The free slot whose cells share the longest prefix with `prompt`.

        Prefixes under MIN_REUSE_TOKENS (unless that is the whole prompt) do not count;
        ties go to the least recently used slot, so a new conversation does not evict a
        recent one.
        """
        if not free:
            raise ValueError("no free slot to choose from")

        def score(slot: int) -> tuple[int, int, int]:
            shared = min(common_prefix(self.held.get(slot, ()), prompt), len(prompt) - 1)
            # A short prompt found whole counts; otherwise only a prefix worth a slot.
            worth = shared >= min(MIN_REUSE_TOKENS, len(prompt) - 1)
            return (shared if worth else 0, -self.last_used.get(slot, 0), -slot)

        return max(free, key=score)

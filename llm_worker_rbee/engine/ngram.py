"""Draft tokens by n-grams: what is predicted to come next in a sequence, from its own prompt
and output (prompt lookup: vLLM's n-gram proposer, llama-server's `ngram-simple`) and from
what the model wrote before after the same context (the worker's memory of outputs, as
llama-server's `ngram-mod` keeps one across requests). Text that repeats its prompt (code
edits, quotes, JSON that echoes keys) or an earlier answer (a retry, a regeneration, n
choices of one prompt) gets drafts that the target model then accepts several at a time.
Which drafts a step verifies, and how long, is engine/draft_plan.py's choice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

# N-gram lengths looked up in a sequence's own text, longest first: a longer match is a
# better predictor; a 1-gram matches almost anywhere and would mostly propose drafts that
# fail.
SIZES = (3, 2)
# The tokens before an output token that key it in the memory: long enough that two texts
# rarely share a key and go on differently (llama-server's ngram-mod hashes 24 into a table
# that collides; these keys are exact).
MEMORY_KEY = 16
# Keys the memory holds at most (about 100 bytes each); past it the oldest quarter goes.
MEMORY_ENTRIES = 1 << 18
# A draft's length at most, and draft rows one fast-mode step may add in all: each is a row
# of logits over the whole vocabulary reserved at the load (262k for Gemma 3: 1 MiB, and as
# much again in the compute buffer). Past 32 rows a CPU step gains little per row
# (docs/PERFORMANCE.md, "Drafts that pay").
MAX_DRAFT = 32
DRAFT_ROWS = 32
# The acceptance estimates: a token's chance of being kept given the ones before it were,
# counted over drafted and shadowed proposals with older ones fading (DECAY a token). The
# worker's start from its kind's prior, weighing PRIOR_WEIGHT outcomes; a new sequence's
# at the worker's, weighing as much.
DECAY = 0.95
PRIOR_WEIGHT = 4.0
# Which estimate a proposed token's chance is (its kind): from the memory, a proposal's
# first token or a later one (a text being copied goes on being copied); from the own text,
# by its match, how many tokens before it agree with the ones before the place it is copied
# from, at least each of MATCHES (2 or 3 tokens often agree by chance; after 16 a copy is
# under way, and it goes on until the text changes, as llama-server's ngram-simple, which
# waits for 12, counts on).
MEMORY_FIRST, MEMORY_LATER = 0, 1
MATCHES = (0, 4, 8, 16)
PRIORS = (0.75, 0.75, 0.5, 0.7, 0.85, 0.9)  # by kind: the memory's two, then MATCHES'


def own_kind(match: int) -> int:
    """The kind of an own-text token whose `match` tokens before it agree with its source's."""
    return 2 + bisect_right(MATCHES, match) - 1


@dataclass(frozen=True, slots=True)
class Proposal:
    """Tokens predicted to come next, and the kind of each (where it came from)."""

    tokens: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def head(self, n: int) -> Proposal:
        return Proposal(self.tokens[:n], self.kinds[:n])


class Acceptance:
    """How often proposed tokens of one kind were kept, older outcomes fading."""

    def __init__(self, p: float) -> None:
        self._hits = p * PRIOR_WEIGHT
        self._misses = (1 - p) * PRIOR_WEIGHT

    @property
    def p(self) -> float:
        return self._hits / (self._hits + self._misses)

    def observe(self, hit: bool) -> None:
        self._hits = self._hits * DECAY + hit
        self._misses = self._misses * DECAY + (not hit)


class NgramMemory:
    """The worker's memory of outputs: for the MEMORY_KEY tokens before each generated token
    (prompt tokens included), and the count of earlier times its sequence wrote after them,
    that token, the latest writer winning, `entries` at most (0: none kept,
    `--speculation prompt`). The count tells two places of one text apart where the same
    context goes on differently (a JSON object written twice, the second time after a copy
    of the prompt's last lines, its id one higher): keyed by the context alone, each would
    recall the other's token. Prompts are not kept: where a prompt and an earlier output
    share a context, the output is what the model writes there. It also holds the worker's
    acceptance by kind, which a new sequence's estimates start from."""

    def __init__(self, entries: int = MEMORY_ENTRIES) -> None:
        self._next: dict[int, int] = {}  # by the hash of (key, times seen)
        self._entries = entries
        self.acceptance = tuple(Acceptance(p) for p in PRIORS)  # by kind

    def __len__(self) -> int:
        return len(self._next)

    @property
    def keeps(self) -> bool:
        return self._entries > 0

    @staticmethod
    def key(context: Sequence[int]) -> int | None:
        """The key of the context that `context` ends with, None if it is too short."""
        return hash(tuple(context[-MEMORY_KEY:])) if len(context) >= MEMORY_KEY else None

    def remember(self, key: int, seen: int, token: int) -> None:
        """Keeps `token` as what followed the context `key` after `seen` earlier times."""
        if not self._entries:
            return
        table = self._next
        table[hash((key, seen))] = token
        if len(table) > self._entries:  # dicts keep insertion order: the oldest go
            for old in list(islice(table, self._entries // 4)):
                del table[old]

    def recall(self, key: int, seen: int) -> int | None:
        """What followed the context `key` after `seen` earlier times; else the first time."""
        table = self._next
        if not table:
            return None
        token = table.get(hash((key, seen)))
        return table.get(hash((key, 0))) if token is None and seen else token


class NgramDrafter:
    """A sequence's tokens so far and, for each n-gram of them, where its latest occurrence
    that has a follower ended; proposes what comes next, and estimates how likely each
    proposed token is to be kept from how the earlier proposals of its kind fared."""

    def __init__(
        self,
        prompt: Iterable[int],
        memory: NgramMemory,
        max_draft: int = MAX_DRAFT,
    ) -> None:
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._memory = memory
        self.max_draft = max_draft
        self._acceptance = tuple(Acceptance(worker.p) for worker in memory.acceptance)
        # The latest proposal not drafted (its tokens and their kinds), checked against
        # the tokens that come instead: a sequence whose drafts stopped paying keeps
        # learning whether they would again.
        self._shadow: list[tuple[int, int]] = []
        # Where in the own text the sequence's tokens have been following an earlier passage
        # (-1: nowhere): the latest occurrence of a tail is often another passage than the
        # one being copied (JSON repeats `",\n  "` everywhere); the one followed has the
        # longer match.
        self._cursor = -1
        # How many times the sequence has written after each memory key (NgramMemory).
        self._seen: dict[int, int] = {}
        for token in prompt:
            self._index_next(token)

    def chances(self, proposal: Proposal) -> list[float]:
        """The chance that each token of `proposal` is kept: its kind's estimate times the
        chance of the token before it."""
        p = [a.p for a in self._acceptance]
        chance, worths = 1.0, []
        for kind in proposal.kinds:
            chance *= p[kind]
            worths.append(chance)
        return worths

    def _index_next(self, token: int) -> None:
        history, index = self._tokens, self._index
        end = len(history)
        for n in SIZES:
            if end >= n:  # the n-gram ending here is followed by `token`, at `end`
                index[tuple(history[end - n : end])] = end
        history.append(token)

    def _observe(self, kind: int, hit: bool) -> None:
        self._acceptance[kind].observe(hit)
        self._memory.acceptance[kind].observe(hit)

    def sampled(self, token: int) -> None:
        """Takes the sequence's next token: indexed, remembered, followed in the own text,
        and checked against a shadowed proposal."""
        history, memory = self._tokens, self._memory
        if memory.keeps and (key := memory.key(history)) is not None:
            seen = self._seen.get(key, 0)
            memory.remember(key, seen, token)
            self._seen[key] = seen + 1
        if self._shadow:
            predicted, shadowed = self._shadow[0]
            self._observe(shadowed, predicted == token)
            if predicted == token:
                del self._shadow[0]
            else:
                self._shadow.clear()
        following = 0 <= self._cursor < len(history) and history[self._cursor] == token
        self._index_next(token)
        self._cursor = self._cursor + 1 if following else self._lookup(history)

    def propose(self, limit: int) -> Proposal:
        """Up to `limit` tokens predicted to follow, and their kinds: the memory's token for
        the MEMORY_KEY tokens before it and the times the sequence met them before, else the
        continuation of the latest earlier occurrence in the sequence's own text of the
        longest matching tail, or of the passage being followed where its match is as long;
        none when nothing matches."""
        history, memory = self._tokens, self._memory
        limit = min(limit, self.max_draft)
        window = history[-max(MEMORY_KEY, MATCHES[-1], SIZES[0]) :]  # then the proposal's
        tokens: list[int] = []
        kinds: list[int] = []
        copy = -1  # where in `history` the own-text continuation goes on, -1 none
        match = 0  # how many tokens before `copy` agree with the end of `window`
        again: dict[int, int] = {}  # memory keys met again in the proposal
        while len(tokens) < limit:
            token = None
            if len(memory) and (key := memory.key(window)) is not None:
                times = again.get(key, 0)
                token = memory.recall(key, self._seen.get(key, 0) + times)
                again[key] = times + 1
            if token is None:
                if not 0 <= copy < len(history):
                    copy = self._lookup(window)
                    if copy < 0:
                        break
                    match = self._match(window, copy)
                    if not tokens and 0 <= self._cursor != copy:  # the passage followed
                        followed = self._match(window, self._cursor)
                        if followed >= match:
                            copy, match = self._cursor, followed
                token, kind = history[copy], own_kind(match)
                copy, match = copy + 1, match + 1
            else:
                kind = MEMORY_LATER if tokens else MEMORY_FIRST
                if 0 <= copy < len(history) and history[copy] == token:
                    copy, match = copy + 1, match + 1
                else:
                    copy = -1
            tokens.append(token)
            kinds.append(kind)
            window.append(token)
        return Proposal(tokens, kinds)

    def _lookup(self, window: Sequence[int]) -> int:
        """Where the longest tail of `window` was last followed in the own text, or -1."""
        for n in SIZES:
            if len(window) >= n:
                end = self._index.get(tuple(window[-n:]))
                if end is not None:
                    return end
        return -1

    def _match(self, window: Sequence[int], end: int) -> int:
        """How many tokens before `end` in the own text agree with the end of `window`, up
        to the last of MATCHES."""
        history, most, n = self._tokens, min(MATCHES[-1], end, len(window)), 0
        while n < most and history[end - 1 - n] == window[-1 - n]:
            n += 1
        return n

    def planned(self, proposal: Proposal, drafted: int) -> None:
        """What the step made of `proposal`: `drafted` of its tokens verified; none, and it
        is checked against the tokens that come instead (unless one is being checked)."""
        if drafted:
            self._shadow = []
        elif not self._shadow:
            self._shadow = list(zip(proposal.tokens, proposal.kinds, strict=True))

    def verified(self, draft: Proposal, kept: int) -> None:
        """`draft` was verified and its first `kept` tokens kept."""
        for kind in draft.kinds[:kept]:
            self._observe(kind, True)
        if kept < len(draft):
            self._observe(draft.kinds[kept], False)

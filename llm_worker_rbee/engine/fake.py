"""A scripted engine with the Engine protocol, for actor and scenario tests in virtual time.

Tokenization is byte-level (token = byte value + 3), so prompts of any text work and
multi-byte UTF-8 characters split across tokens come for free. Replies are scripted as
lists of pieces (str or raw bytes); each piece is one generated token.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from llm_worker_rbee.engine.base import (
    EngineError,
    EngineOutOfMemory,
    ModelInfo,
    ModelLoadError,
    SeqOutput,
)
from llm_worker_rbee.engine.loading import LoadProgress, LoadStage
from llm_worker_rbee.messages.inference import SamplingParams, TokenLogprob, TokenLogprobs

BOS = 1
EOS = 2
_BYTE_BASE = 3
_PIECE_BASE = _BYTE_BASE + 256


@dataclass
class FakeScript:
    """What the fake engine does.

    Attributes:
        reply: pieces generated for any prompt not matched by `replies`.
        replies: prompt substring -> pieces; the first key found in the prompt text wins.
        step_latency: virtual seconds one step takes.
        prefill_chunk: prompt tokens one step processes per sequence.
        fail_at_steps: step numbers (1-based) that raise EngineError.
        oom_at_steps: step numbers (1-based) that raise EngineOutOfMemory.
        load_error: the load fails with this message once the weights are in (as when
            llama.cpp cannot create the context).
        n_ctx: total context: one pool of KV cells all `n_slots` sequences draw from, as
            the llama engine's fast mode; with `batch_invariant`, each sequence gets
            n_ctx // n_slots of its own.
        prompt_cache: a slot keeps the prompt it decoded; the next prompt admitted there
            skips the shared prefix, and `choose_slot` prefers the longest match (as the
            llama engine does). Off: every prompt is decoded whole and slots go in order.
            From a shared pool, a step that needs the room drops the cache of the least
            recently used idle slots first; if the room is still not there, the step runs
            out of memory (llama_decode's 1).
        chat_template: the model's Jinja chat template (None: the plain transcript).
        tokens_per_step: tokens a running sequence gets per step, as when the llama engine
            accepts n-gram drafts (one for a request with `draft_max` 0).
    """

    reply: list[str | bytes] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    replies: dict[str, list[str | bytes]] = field(default_factory=dict)
    step_latency: float = 0.01
    prefill_chunk: int = 512
    fail_at_steps: frozenset[int] = frozenset()
    oom_at_steps: frozenset[int] = frozenset()
    load_error: str | None = None
    n_ctx: int = 4096
    n_slots: int = 4
    prompt_cache: bool = False
    chat_template: str | None = None
    batch_invariant: bool = False
    tokens_per_step: int = 1


class FakeVocab:
    """The fake's byte-level vocabulary, plus an id for each scripted piece the engine has
    generated (made on the engine side, read by the routes: guarded by a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._piece_ids: dict[bytes, int] = {}
        self._pieces: list[bytes] = []

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        tokens = [b + _BYTE_BASE for b in text.encode("utf-8")]
        return [BOS, *tokens] if add_special else tokens

    def token_piece(self, token: int) -> bytes:
        if token < _BYTE_BASE:  # BOS, EOS and the unused id 0 have no text
            return b""
        if token < _PIECE_BASE:
            return bytes([token - _BYTE_BASE])
        with self._lock:
            return self._pieces[token - _PIECE_BASE]

    def piece_id(self, piece: bytes) -> int:
        with self._lock:
            if piece not in self._piece_ids:
                self._piece_ids[piece] = _PIECE_BASE + len(self._pieces)
                self._pieces.append(piece)
            return self._piece_ids[piece]

    def check_grammar(self, grammar: str) -> None:
        """The fake does not enforce grammars; it only wants the root rule there."""
        if "root" not in grammar:
            raise ValueError("the grammar has no root rule")


@dataclass(frozen=True)
class FakeSlotCaches:
    """The fake's prompt-cache snapshot: the longest shared prefix wins, ties the lowest
    slot; without `prompt_cache` in the script, the first free slot."""

    enabled: bool = False
    held: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int:
        if not self.enabled:
            return free[0]
        return max(free, key=lambda slot: (_shared(self.held.get(slot, ()), prompt), -slot))


@dataclass
class _Seq:
    prompt: list[int]
    pieces: list[bytes]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    fed: int = 0
    generated: int = 0

    @property
    def cells(self) -> int:
        """KV cells the sequence holds: its prompt so far and the tokens it generated."""
        return self.fed + self.generated

    def next_piece(self) -> bytes | None:
        """The scripted piece, then (until min_tokens) the script again; None: the end."""
        if self.generated < len(self.pieces):
            return self.pieces[self.generated]
        if self.generated < self.sampling.min_tokens:
            return self.pieces[self.generated % len(self.pieces)] if self.pieces else b" "
        return None


class FakeEngine:
    def __init__(self, script: FakeScript | None = None) -> None:
        self.script = script or FakeScript()
        self._seqs: dict[int, _Seq] = {}
        self._vocab = FakeVocab()
        self.steps = 0
        self.drafted = 0
        self.accepted = 0
        self.cancelled: list[int] = []
        self.admitted: list[SamplingParams] = []  # every admission's sampling, in order
        self.closed = False
        self._held: dict[int, tuple[int, ...]] = {}
        self._ended = 0
        self._last_used: dict[int, int] = {}
        self.evicted: list[int] = []  # slots whose prompt cache was dropped for room
        self._caches = FakeSlotCaches(self.script.prompt_cache)
        shared = not self.script.batch_invariant
        self._info = ModelInfo(
            model_id="fake-model",
            n_ctx=self.script.n_ctx,
            n_ctx_train=self.script.n_ctx,
            n_vocab=_PIECE_BASE,
            seq_capacity=self.script.n_ctx if shared else self.script.n_ctx // self.script.n_slots,
            chat_template=self.script.chat_template,
            bos_text="<bos>",
            eos_text="<eos>",
            kv_pool=self.script.n_ctx if shared else None,
            n_slots=self.script.n_slots,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def vocab(self) -> FakeVocab:
        return self._vocab

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._vocab.tokenize(text, add_special=add_special)

    def _reply_for(self, prompt: Sequence[int]) -> list[bytes]:
        text = b"".join(self._vocab.token_piece(t) for t in prompt).decode("utf-8", "replace")
        chosen = self.script.reply
        for key, pieces in self.script.replies.items():
            if key in text:
                chosen = pieces
                break
        return [p.encode("utf-8") if isinstance(p, str) else p for p in chosen]

    def prompt_cache(self) -> FakeSlotCaches:
        return self._caches

    def _publish(self) -> None:
        self._caches = FakeSlotCaches(self.script.prompt_cache, MappingProxyType(dict(self._held)))

    def admit(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} is already active")
        cached = 0
        if self.script.prompt_cache:
            cached = min(_shared(self._held.pop(seq_id, ()), prompt), len(prompt) - 1)
        self._seqs[seq_id] = _Seq(
            prompt=list(prompt),
            pieces=self._reply_for(prompt),
            sampling=sampling,
            fed=max(cached, 0),
        )
        self.admitted.append(sampling)
        self._publish()
        return max(cached, 0)

    def cancel(self, seq_id: int) -> None:
        seq = self._seqs.pop(seq_id, None)
        if seq is not None:
            self.cancelled.append(seq_id)
            self._ended += 1
            self._last_used[seq_id] = self._ended
            if self.script.prompt_cache:
                self._held[seq_id] = tuple(seq.prompt[: seq.fed])
            self._publish()

    def cells_free(self) -> int:
        """Cells of the pool neither a running sequence nor a slot's prompt cache holds."""
        used = sum(seq.cells for seq in self._seqs.values())
        return self.script.n_ctx - used - sum(len(held) for held in self._held.values())

    def held(self, seq_id: int) -> int:
        """How many prompt tokens an idle slot's cache holds."""
        return len(self._held.get(seq_id, ()))

    def _make_room(self, needed: int) -> None:
        """As the llama engine: drop idle slots' caches, least recently used first, until
        the step's cells are free; else the step runs out of KV cells."""
        if self.script.batch_invariant:
            return
        free = self.cells_free()
        for slot in sorted(self._held, key=lambda s: (self._last_used.get(s, 0), s)):
            if free >= needed:
                break
            free += len(self._held.pop(slot))
            self.evicted.append(slot)
        if free < needed:
            raise EngineOutOfMemory(f"no KV cells free for the batch ({needed} > {free})")

    def has_work(self) -> bool:
        return bool(self._seqs)

    @property
    def active(self) -> list[int]:
        return sorted(self._seqs)

    def prompt_remaining(self, seq_id: int) -> int:
        seq = self._seqs[seq_id]
        return len(seq.prompt) - seq.fed

    def step(self) -> list[SeqOutput]:
        self.steps += 1
        if self.steps in self.script.fail_at_steps:
            raise EngineError(f"scripted failure at step {self.steps}")
        if self.steps in self.script.oom_at_steps:
            raise EngineOutOfMemory(f"scripted out of memory at step {self.steps}")
        try:
            self._make_room(sum(self._step_cells(seq) for seq in self._seqs.values()))
        finally:
            self._publish()  # idle slots' caches may be gone
        outputs: list[SeqOutput] = []
        for seq_id in sorted(self._seqs):
            seq = self._seqs[seq_id]
            if seq.fed < len(seq.prompt):
                seq.fed = min(len(seq.prompt), seq.fed + self.script.prefill_chunk)
                if seq.fed < len(seq.prompt):
                    continue
            run = self.script.tokens_per_step if seq.sampling.draft_max != 0 else 1
            if run > 1:
                self.drafted += run - 1
            for kept in range(run):
                output = self._next(seq_id, seq)
                outputs.append(output)
                if output.is_eog:
                    break
                if kept:
                    self.accepted += 1
        return outputs

    def _next(self, seq_id: int, seq: _Seq) -> SeqOutput:
        piece = seq.next_piece()
        if piece is None:
            return SeqOutput(seq_id=seq_id, token=EOS, piece=b"", is_eog=True)
        token = self._vocab.piece_id(piece)
        k = seq.sampling.logprobs
        logprobs = None if k is None else fake_logprobs(token, piece, seq.generated, k)
        seq.generated += 1
        return SeqOutput(seq_id, token, piece, False, logprobs)

    def _step_cells(self, seq: _Seq) -> int:
        """The cells a step takes for `seq`: its next prompt chunk, or its last token."""
        if seq.fed < len(seq.prompt):
            return min(len(seq.prompt) - seq.fed, self.script.prefill_chunk)
        return 1

    def close(self) -> None:
        """Drops every sequence; idempotent, like the llama engine's."""
        if self.closed:
            return
        self.closed = True
        for seq_id in list(self._seqs):
            self.cancel(seq_id)

    def load(self, progress: LoadProgress) -> FakeEngine:
        """The rest of a load once the weights are in: context and warm-up stages, or the
        scripted `load_error`. Weight progress is the runner's (VirtualTimeLoader)."""
        progress.enter(LoadStage.CREATING_CONTEXT)
        if self.script.load_error is not None:
            raise ModelLoadError(self.script.load_error)
        progress.enter(LoadStage.WARMING_UP)
        return self


def fake_logprobs(token: int, piece: bytes, index: int, k: int) -> TokenLogprobs:
    """Deterministic logprobs for the `index`-th generated token: it is the likeliest, at
    -0.25, -0.5, -0.75, -1 in turn; the alternatives are the bytes "a", "b", ... one nat
    apart below it."""
    chosen = TokenLogprob(token, piece, -((index % 4) + 1) / 4)
    others = [
        TokenLogprob(_BYTE_BASE + ord("a") + j, bytes([ord("a") + j]), chosen.logprob - 1 - j)
        for j in range(max(k - 1, 0))
    ]
    return TokenLogprobs(chosen, tuple([chosen, *others][:k]))


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

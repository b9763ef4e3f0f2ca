"""The step-based Engine protocol shared by the llama.cpp engine and the scripted fake."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llm_worker_rbee.messages.inference import SamplingParams, TokenLogprobs


class EngineError(Exception):
    """A step failed; every sequence that was in the step has to be failed."""


class EngineOutOfMemory(EngineError):
    """A step failed for memory (no KV cells, or an allocation llama.cpp could not make).

    The requests in the step end with 503 `resource_exhausted`; the worker goes on serving.
    """


class ModelLoadError(Exception):
    """The model could not be loaded: llama.cpp refused the file or the context."""

    code = "load_failed"  # the error code /v1/loading/progress reports


class LoadTimeout(ModelLoadError):
    """The load ran past `--load-timeout` and was aborted."""

    code = "load_timeout"


class LoadCancelled(ModelLoadError):
    """The worker was told to stop while it was loading; the load was aborted."""

    code = "load_cancelled"


@dataclass(frozen=True, slots=True)
class SeqOutput:
    """One sampled token for one sequence."""

    seq_id: int
    token: int
    piece: bytes
    is_eog: bool
    # Only for sequences whose sampling asked for logprobs.
    logprobs: TokenLogprobs | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the routes and the scheduler need to know about the loaded model and context.

    Attributes:
        n_ctx: KV cells in all.
        seq_capacity: the most cells one request may use (prompt and completion): the whole
            pool when the slots share it, else a slot's own stream (`n_ctx / slots`).
        kv_pool: the cells every slot draws from (fast mode, `kv_unified`); None when each
            slot owns a stream of its own (`--batch-invariant`), so cells need no accounting.
        n_slots: sequences the context holds.
        step_s: seconds of one decode step with every slot busy, timed at the warm-up (None:
            not measured): the scheduler's pace until live steps teach it better.
    """

    model_id: str
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    seq_capacity: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    kv_pool: int | None = None
    n_slots: int = 1
    step_s: float | None = None


class Vocabulary(Protocol):
    """The model's vocabulary for the routes: tokenizing, detokenizing, checking grammars.

    Safe to call from any thread while the engine steps (the engine gives it out; the routes
    never hold the engine). It lives as long as the loaded model.
    """

    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...

    def token_piece(self, token: int) -> bytes: ...

    def check_grammar(self, grammar: str) -> None:
        """Raises ValueError if the engine cannot use `grammar` (GBNF, root rule `root`)."""
        ...


class PromptCacheView(Protocol):
    """An immutable snapshot of what the slots' KV cells hold, which the engine publishes
    after each change (an admission, a cancel, a step); the SlotScheduler asks it, on the
    trio thread, which free slot a new prompt should get. A stale answer only costs a cache
    miss: `Engine.admit` looks at the cells it actually finds."""

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int: ...


class Engine(Protocol):
    """Multi-sequence decoding, one `step()` at a time.

    Not thread-safe: only the ModelActor's own (its DecodeLoop, on the engine thread) calls
    it. Others get what they need without it: the `vocab`, which any thread may use, and
    the `prompt_cache()` snapshot (both handed out through the ModelHandle).
    """

    # Draft tokens decoded by n-gram speculation since the load, and those kept.
    drafted: int
    accepted: int

    @property
    def info(self) -> ModelInfo: ...

    @property
    def vocab(self) -> Vocabulary: ...

    def prompt_cache(self) -> PromptCacheView:
        """The latest snapshot of the slots' prompt caches; never changes once returned."""
        ...

    def admit(self, seq_id: int, prompt: Sequence[int], sampling: SamplingParams) -> int:
        """Starts a sequence in slot `seq_id`.

        Returns how many leading prompt tokens the slot's KV cells already held (the prompt
        cache); only the rest is decoded. Raises ValueError for a bad slot or prompt.
        """
        ...

    def cancel(self, seq_id: int) -> None: ...

    def has_work(self) -> bool: ...

    def step(self) -> list[SeqOutput]:
        """Run one decode over every active sequence.

        New sequences get (a chunk of) their prompt, the others one token, or with accepted
        drafts several. Returns the outputs of every sequence that sampled in this step, a
        sequence's in order. Raises EngineError on failure.
        """
        ...

    def close(self) -> None: ...

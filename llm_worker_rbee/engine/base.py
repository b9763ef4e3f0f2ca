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


class Engine(Protocol):
    """Multi-sequence decoding, one `step()` at a time.

    Not thread-safe: the ModelActor calls `admit`, `cancel` and `step` from one thread at a
    time. `tokenize` and `token_piece` only read the vocabulary and may be called any time.
    """

    @property
    def info(self) -> ModelInfo: ...

    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...

    def token_piece(self, token: int) -> bytes: ...

    def check_grammar(self, grammar: str) -> None:
        """Raises ValueError if the engine cannot use `grammar` (GBNF, root rule `root`).

        Called on the trio thread, possibly while a step runs: it must only read.
        """
        ...

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int:
        """Which of the `free` slots a new `prompt` should get (the scheduler asks).

        Called on the trio thread, possibly while a step runs: it must only read.
        """
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

        New sequences get (a chunk of) their prompt, the others one token. Returns one output
        per sequence that sampled a token in this step. Raises EngineError on failure.
        """
        ...

    def close(self) -> None: ...

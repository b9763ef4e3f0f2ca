"""DecodeLoop: the ModelActor's bookkeeping around the engine, free of trio and threads.

It applies admissions and cancellations, runs steps, enforces token limits and stop strings,
and turns each step's outputs into ready text per sequence (`pipeline/output.py`): a sequence
that ends in a step (end of generation, limit, stop string) is out of the engine before the
next one. It never delivers anything itself: each call returns the outputs to hand to
sessions, so the same code serves the engine thread in production and the pump in virtual
time (`pipeline/pump.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from llm_worker_rbee.engine.base import Engine, EngineOutOfMemory, PromptCacheView, SeqOutput
from llm_worker_rbee.messages.inference import (
    Abandon,
    Admit,
    Cancel,
    FinishReason,
    ModelCommand,
    SequenceEnd,
    SequenceFailed,
    SequenceFinished,
    TextOutput,
)
from llm_worker_rbee.pipeline.memory_pressure import MemoryPressure
from llm_worker_rbee.pipeline.output import SequenceText
from llm_worker_rbee.pipeline.token_pace import TokenPace

log = logging.getLogger(__name__)

Delivery = tuple[Admit, TextOutput]


class SequenceProgress(NamedTuple):
    """One running sequence, for the status page: prefill until its first token. A named
    tuple: one is made for every running sequence at every step, and a tuple is made in
    half the time of a frozen dataclass."""

    seq_id: int  # its slot
    job_id: str
    prompt_tokens: int
    generated: int


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    active_sequences: int
    steps: int
    tokens_generated: int
    prompt_tokens: int
    # KV cells the active sequences fill (prompt + generated), for the cache-usage gauge.
    kv_tokens: int = 0
    # Steps keep running out of memory (pipeline/memory_pressure.py): heartbeat `degraded`.
    memory_degraded: bool = False
    # The running sequences in slot order (a few small records per step: the status page
    # reads them once a second, so nothing else on the token path changes for it).
    sequences: tuple[SequenceProgress, ...] = ()
    # Slot-seconds per generated token while busy (TokenPace); None: not known yet.
    token_s: float | None = None
    # The engine's n-gram draft tokens decoded and kept, since the load.
    drafted: int = 0
    accepted: int = 0


@dataclass
class _Active:
    admit: Admit
    limit: int
    text: SequenceText
    generated: int = 0
    cached: int = 0  # prompt tokens reused from the slot's KV cache

    @property
    def progress(self) -> SequenceProgress:
        admit = self.admit
        return SequenceProgress(
            admit.seq_id, admit.job_id, len(admit.prompt_tokens), self.generated
        )


class DecodeLoop:
    """Not thread-safe: one thread calls `apply` and `step`. `statistics()` and
    `prompt_cache()` may be read from any thread: frozen snapshots replaced after each call."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._memory = MemoryPressure(clock)
        self._pace = TokenPace(clock, engine.info.step_s)
        self._active: dict[int, _Active] = {}  # in slot order (sorted on admit), for _refresh
        self._steps = 0
        self._tokens_generated = 0
        self._prompt_tokens = 0
        self._snapshot = ModelStatistics(0, 0, 0, 0, token_s=self._pace.seconds())

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def statistics(self) -> ModelStatistics:
        return self._snapshot

    def prompt_cache(self) -> PromptCacheView:
        """The engine's latest prompt-cache snapshot; any thread (it never changes)."""
        return self._engine.prompt_cache()

    def apply(self, command: ModelCommand | Abandon) -> list[Delivery]:
        out: list[Delivery] = []
        if isinstance(command, Admit):
            self._admit(command, out)
        elif isinstance(command, Cancel):
            self._drop(command.seq_id)
        else:
            active = self._active.get(command.admit.seq_id)
            if active is not None and active.admit is command.admit:
                self._drop(command.admit.seq_id)
        self._refresh()
        return out

    def step(self) -> list[Delivery]:
        """One engine step over every active sequence; an exception fails this step only."""
        self._steps += 1
        started = self._pace.step_started()
        sequences, generated = len(self._active), self._tokens_generated
        out: list[Delivery] = []
        try:
            outputs = self._engine.step()
        except Exception as exc:  # EngineError or a bug in the engine
            log.error("engine step failed: %s; failing %d sequence(s)", exc, len(self._active))
            memory = isinstance(exc, EngineOutOfMemory)
            if memory:
                self._memory.out_of_memory()
            for seq_id, active in list(self._active.items()):
                self._end(active, SequenceFailed(seq_id, str(exc), memory), out)
        else:
            self._memory.succeeded()
            # The output step: every sequence's token of this step, processed together.
            for output in outputs:
                self._route(output, out)
        tokens = self._tokens_generated - generated
        self._pace.step_ended(started, sequences, tokens, busy=bool(self._active))
        self._refresh()
        return out

    def _admit(self, command: Admit, out: list[Delivery]) -> None:
        capacity = self._engine.info.seq_capacity - len(command.prompt_tokens)
        limit = min(command.max_tokens, capacity)
        try:
            cached = self._engine.admit(command.seq_id, command.prompt_tokens, command.sampling)
        except Exception as exc:  # any refusal fails this request, never the actor
            failed = SequenceFailed(command.seq_id, str(exc))
            out.append((command, TextOutput(command.seq_id, "", 0, end=failed)))
            return
        self._prompt_tokens += len(command.prompt_tokens)
        text = SequenceText(
            command.seq_id, command.stop, command.sampling.min_tokens, command.thinking
        )
        self._active[command.seq_id] = _Active(command, limit, text, cached=cached)
        self._active = dict(sorted(self._active.items()))

    def _route(self, output: SeqOutput, out: list[Delivery]) -> None:
        active = self._active.get(output.seq_id)
        if active is None:  # cancelled while the step ran
            return
        if output.is_eog:
            self._finish(active, "eos", out)
            return
        active.generated += 1
        self._tokens_generated += 1
        active.text.add(output.piece, output.logprobs)
        if active.text.stopped:
            self._finish(active, "stop", out)
        elif active.generated >= active.limit:
            self._finish(active, "length", out)
        else:
            ready = active.text.take(active.cached)
            if ready is not None:
                out.append((active.admit, ready))

    def _finish(self, active: _Active, reason: FinishReason, out: list[Delivery]) -> None:
        active.text.finish()
        finished = SequenceFinished(
            seq_id=active.admit.seq_id,
            reason=reason,
            prompt_tokens=len(active.admit.prompt_tokens),
            completion_tokens=active.generated,
            cached_tokens=active.cached,
            stop=active.text.matched_stop,
        )
        self._end(active, finished, out)

    def _end(self, active: _Active, end: SequenceEnd, out: list[Delivery]) -> None:
        """Drops the sequence from the engine now and sends its last output."""
        self._drop(active.admit.seq_id)
        last = active.text.take(active.cached, end)
        assert last is not None  # `take` always answers an end
        out.append((active.admit, last))

    def _drop(self, seq_id: int) -> None:
        if self._active.pop(seq_id, None) is not None:
            self._engine.cancel(seq_id)

    def _refresh(self) -> None:
        sequences = tuple([a.progress for a in self._active.values()])
        self._snapshot = ModelStatistics(
            active_sequences=len(self._active),
            steps=self._steps,
            tokens_generated=self._tokens_generated,
            prompt_tokens=self._prompt_tokens,
            kv_tokens=sum(s.prompt_tokens + s.generated for s in sequences),
            memory_degraded=self._memory.degraded,
            sequences=sequences,
            token_s=self._pace.seconds(),
            drafted=self._engine.drafted,
            accepted=self._engine.accepted,
        )

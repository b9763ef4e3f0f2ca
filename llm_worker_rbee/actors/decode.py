"""DecodeLoop: the ModelActor's bookkeeping around the engine, free of trio and threads.

It applies admissions and cancellations, runs steps, enforces token limits and turns engine
outputs into per-sequence events. It never delivers anything itself: each call returns the
events to hand to sessions, so the same code serves an inline loop in virtual time and the
engine thread in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from llm_worker_rbee.actors.memory_pressure import MemoryPressure
from llm_worker_rbee.engine.base import Engine, EngineOutOfMemory, SeqOutput
from llm_worker_rbee.messages.inference import (
    Admit,
    Cancel,
    FinishReason,
    ModelCommand,
    SequenceEvent,
    SequenceFailed,
    SequenceFinished,
    TokenGenerated,
)

log = logging.getLogger(__name__)

Delivery = tuple[Admit, SequenceEvent]


@dataclass(frozen=True, slots=True)
class Abandon:
    """The session behind `admit` is gone: drop its sequence if it is still that one.

    Not a Cancel by slot: by the time this is applied (the engine thread may be steps ahead)
    the slot can hold the next request's sequence, which must live on.
    """

    admit: Admit


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    active_sequences: int
    steps: int
    tokens_generated: int
    prompt_tokens: int
    # KV cells the active sequences fill (prompt + generated), for the cache-usage gauge.
    kv_tokens: int = 0
    # Steps keep running out of memory (actors/memory_pressure.py): heartbeat `degraded`.
    memory_degraded: bool = False


@dataclass
class _Active:
    admit: Admit
    limit: int
    generated: int = 0
    cached: int = 0  # prompt tokens reused from the slot's KV cache


class DecodeLoop:
    """Not thread-safe: one thread calls `apply` and `step`. `statistics()` may be read from
    any thread: it is a frozen snapshot replaced after each call."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._memory = MemoryPressure(clock)
        self._active: dict[int, _Active] = {}
        self._steps = 0
        self._tokens_generated = 0
        self._prompt_tokens = 0
        self._snapshot = ModelStatistics(0, 0, 0, 0)

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def statistics(self) -> ModelStatistics:
        return self._snapshot

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
        out: list[Delivery] = []
        try:
            outputs = self._engine.step()
        except Exception as exc:  # EngineError or a bug in the engine
            log.error("engine step failed: %s; failing %d sequence(s)", exc, len(self._active))
            memory = isinstance(exc, EngineOutOfMemory)
            if memory:
                self._memory.out_of_memory()
            for seq_id, active in list(self._active.items()):
                self._drop(seq_id)
                out.append((active.admit, SequenceFailed(seq_id, str(exc), memory)))
        else:
            self._memory.succeeded()
            for output in outputs:
                self._route(output, out)
        self._refresh()
        return out

    def _admit(self, command: Admit, out: list[Delivery]) -> None:
        capacity = self._engine.info.seq_capacity - len(command.prompt_tokens)
        limit = min(command.max_tokens, capacity)
        try:
            cached = self._engine.admit(command.seq_id, command.prompt_tokens, command.sampling)
        except Exception as exc:  # any refusal fails this request, never the actor
            out.append((command, SequenceFailed(command.seq_id, str(exc))))
            return
        self._prompt_tokens += len(command.prompt_tokens)
        self._active[command.seq_id] = _Active(command, limit, cached=cached)

    def _route(self, output: SeqOutput, out: list[Delivery]) -> None:
        active = self._active.get(output.seq_id)
        if active is None:  # cancelled while the step ran
            return
        if output.is_eog:
            self._finish(active, "eos", out)
            return
        active.generated += 1
        self._tokens_generated += 1
        event = TokenGenerated(
            output.seq_id, output.token, output.piece, active.cached, output.logprobs
        )
        out.append((active.admit, event))
        if active.generated >= active.limit:
            self._finish(active, "length", out)

    def _finish(self, active: _Active, reason: FinishReason, out: list[Delivery]) -> None:
        seq_id = active.admit.seq_id
        self._drop(seq_id)
        finished = SequenceFinished(
            seq_id=seq_id,
            reason=reason,
            prompt_tokens=len(active.admit.prompt_tokens),
            completion_tokens=active.generated,
            cached_tokens=active.cached,
        )
        out.append((active.admit, finished))

    def _drop(self, seq_id: int) -> None:
        if self._active.pop(seq_id, None) is not None:
            self._engine.cancel(seq_id)

    def _refresh(self) -> None:
        self._snapshot = ModelStatistics(
            active_sequences=len(self._active),
            steps=self._steps,
            tokens_generated=self._tokens_generated,
            prompt_tokens=self._prompt_tokens,
            kv_tokens=sum(len(a.admit.prompt_tokens) + a.generated for a in self._active.values()),
            memory_degraded=self._memory.degraded,
        )

"""ModelActor: owns the engine and runs the decode loop, one step at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.engine.base import Engine, ModelInfo, SeqOutput
from llm_worker_rbee.engine.runner import StepRunner
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
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

INBOX_SIZE = 256


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    active_sequences: int
    steps: int
    tokens_generated: int
    prompt_tokens: int
    # KV cells the active sequences fill (prompt + generated), for the cache-usage gauge.
    kv_tokens: int = 0


@dataclass
class _Active:
    admit: Admit
    limit: int
    admitted_at: float
    generated: int = 0
    cached: int = 0  # prompt tokens reused from the slot's KV cache


@dataclass(frozen=True)
class ModelHandle:
    """What other actors hold to talk to the ModelActor."""

    info: ModelInfo
    engine: Engine = field(repr=False)
    _inbox: trio.MemorySendChannel[ModelCommand] = field(repr=False)
    _actor: ModelActor = field(repr=False)

    async def send(self, command: ModelCommand) -> None:
        self._actor.trace("model", command)
        await self._inbox.send(command)

    def statistics(self) -> ModelStatistics:
        return self._actor.statistics()

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self.engine.tokenize(text, add_special=add_special)

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int:
        """The SlotScheduler's chooser: the free slot whose prompt cache matches best."""
        return self.engine.choose_slot(prompt, free)


class ModelActor:
    """Loads the engine, then applies admissions/cancellations between decode steps.

    A cancel takes effect before the next step, so a sequence stops within one step.
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        runner: StepRunner,
        *,
        tracer: Tracer = no_trace,
    ) -> None:
        self._engine_factory = engine_factory
        self._runner = runner
        self.trace = tracer
        self._engine: Engine | None = None
        self._active: dict[int, _Active] = {}
        self._steps = 0
        self._tokens_generated = 0
        self._prompt_tokens = 0

    def statistics(self) -> ModelStatistics:
        return ModelStatistics(
            active_sequences=len(self._active),
            steps=self._steps,
            tokens_generated=self._tokens_generated,
            prompt_tokens=self._prompt_tokens,
            kv_tokens=sum(len(a.admit.prompt_tokens) + a.generated for a in self._active.values()),
        )

    async def run(
        self, *, task_status: trio.TaskStatus[ModelHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        engine = await self._runner.load(self._engine_factory)
        self._engine = engine
        send, receive = trio.open_memory_channel[ModelCommand](INBOX_SIZE)
        try:
            async with send, receive:
                task_status.started(ModelHandle(engine.info, engine, send.clone(), self))
                await self._loop(engine, receive)
        finally:
            self._engine = None
            # Unload on the engine thread: never free a context another call may be using.
            with trio.CancelScope(shield=True):
                await self._runner.unload(engine.close)

    async def _loop(self, engine: Engine, inbox: trio.MemoryReceiveChannel[ModelCommand]) -> None:
        while True:
            if not self._active:
                try:
                    self._apply(engine, await inbox.receive())
                except trio.EndOfChannel:
                    return
            while True:
                try:
                    self._apply(engine, inbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self._active:
                await self._step(engine)

    def _apply(self, engine: Engine, command: ModelCommand) -> None:
        if isinstance(command, Admit):
            capacity = engine.info.seq_capacity - len(command.prompt_tokens)
            limit = min(command.max_tokens, capacity)
            try:
                cached = engine.admit(command.seq_id, command.prompt_tokens, command.sampling)
            except Exception as exc:  # any refusal fails this request, never the actor
                self._deliver(command, SequenceFailed(command.seq_id, str(exc)))
                return
            self._prompt_tokens += len(command.prompt_tokens)
            self._active[command.seq_id] = _Active(
                command, limit, trio.current_time(), cached=cached
            )
        elif isinstance(command, Cancel):
            self._drop(engine, command.seq_id)

    async def _step(self, engine: Engine) -> None:
        self._steps += 1
        try:
            outputs = await self._runner.run(engine.step)
        except Exception as exc:  # EngineError or a bug in the engine: fail this step only
            log.error("engine step failed: %s; failing %d sequence(s)", exc, len(self._active))
            for seq_id, active in list(self._active.items()):
                engine.cancel(seq_id)
                del self._active[seq_id]
                self._deliver(active.admit, SequenceFailed(seq_id, str(exc)))
            return
        for output in outputs:
            self._route(engine, output)

    def _route(self, engine: Engine, output: SeqOutput) -> None:
        active = self._active.get(output.seq_id)
        if active is None:  # cancelled while the step ran
            return
        if output.is_eog:
            self._finish(engine, active, "eos")
            return
        active.generated += 1
        self._tokens_generated += 1
        event = TokenGenerated(output.seq_id, output.token, output.piece, active.cached)
        if not self._deliver(active.admit, event):
            self._drop(engine, output.seq_id)
        elif active.generated >= active.limit:
            self._finish(engine, active, "length")

    def _finish(self, engine: Engine, active: _Active, reason: FinishReason) -> None:
        seq_id = active.admit.seq_id
        self._drop(engine, seq_id)
        self._deliver(
            active.admit,
            SequenceFinished(
                seq_id=seq_id,
                reason=reason,
                prompt_tokens=len(active.admit.prompt_tokens),
                completion_tokens=active.generated,
                decode_s=trio.current_time() - active.admitted_at,
                cached_tokens=active.cached,
            ),
        )

    def _drop(self, engine: Engine, seq_id: int) -> None:
        if self._active.pop(seq_id, None) is not None:
            engine.cancel(seq_id)

    def _deliver(self, admit: Admit, event: SequenceEvent) -> bool:
        """Hands an event to the session without ever blocking; False if the session is gone."""
        self.trace(f"session:{admit.job_id}", event)
        return _send_nowait(admit, event)


def _send_nowait(admit: Admit, event: SequenceEvent) -> bool:
    try:
        admit.events.send_nowait(event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    except trio.WouldBlock:
        log.error("session for job %s fell %d events behind", admit.job_id, admit.max_tokens)
        return False
    return True

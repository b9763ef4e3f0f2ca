"""ModelActor: owns the engine and its decode loop, and hands every token to its session."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.actors.decode import Abandon, DecodeLoop, Delivery, ModelStatistics
from llm_worker_rbee.actors.engine_thread import EngineThread
from llm_worker_rbee.engine.base import Engine, ModelInfo
from llm_worker_rbee.engine.runner import StepRunner
from llm_worker_rbee.messages.inference import Admit, ModelCommand, SequenceEvent
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

INBOX_SIZE = 256


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
    """Loads the engine, then runs the DecodeLoop: on the engine thread when the runner has
    one (production), inline between trio checkpoints otherwise (virtual time).

    Commands are applied between steps, so a cancel stops its sequence within a step (plus
    the steps the engine thread is ahead, whose tokens nobody reads).
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
        self._loop: DecodeLoop | None = None
        self._abandon: Callable[[Abandon], object] = lambda _: None

    def statistics(self) -> ModelStatistics:
        return ModelStatistics(0, 0, 0, 0) if self._loop is None else self._loop.statistics()

    async def run(
        self, *, task_status: trio.TaskStatus[ModelHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        engine = await self._runner.load(self._engine_factory)
        # Inline, steps run in trio's (possibly virtual) time; on the thread, in real time.
        clock = time.monotonic if self._runner.own_thread else trio.current_time
        loop = self._loop = DecodeLoop(engine, clock)
        send, receive = trio.open_memory_channel[ModelCommand](INBOX_SIZE)
        try:
            async with send, receive:
                task_status.started(ModelHandle(engine.info, engine, send.clone(), self))
                if self._runner.own_thread:
                    await self._run_threaded(loop, receive)
                else:
                    await self._run_inline(loop, receive)
        finally:
            # Unload on the engine thread: never free a context another call may be using.
            with trio.CancelScope(shield=True):
                await self._runner.unload(engine.close)

    async def _run_inline(
        self, loop: DecodeLoop, inbox: trio.MemoryReceiveChannel[ModelCommand]
    ) -> None:
        self._abandon = loop.apply
        while True:
            if not loop.busy:
                try:
                    self._deliver(loop.apply(await inbox.receive()))
                except trio.EndOfChannel:
                    return
            while True:
                try:
                    self._deliver(loop.apply(inbox.receive_nowait()))
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if loop.busy:
                self._deliver(await self._runner.run(loop.step))

    async def _run_threaded(
        self, loop: DecodeLoop, inbox: trio.MemoryReceiveChannel[ModelCommand]
    ) -> None:
        thread = EngineThread(loop, self._deliver)
        self._abandon = thread.submit
        async with trio.open_nursery() as nursery:
            nursery.start_soon(thread.run)
            async for command in inbox:
                thread.submit(command)
            nursery.cancel_scope.cancel()

    def _deliver(self, out: list[Delivery]) -> None:
        """Hands events to their sessions without ever blocking; drops a gone session's
        sequence."""
        for admit, event in out:
            self.trace(f"session:{admit.job_id}", event)
            if not _send_nowait(admit, event):
                self._abandon(Abandon(admit))


def _send_nowait(admit: Admit, event: SequenceEvent) -> bool:
    try:
        admit.events.send_nowait(event)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    except trio.WouldBlock:
        log.error("session for job %s fell %d events behind", admit.job_id, admit.max_tokens)
        return False
    return True

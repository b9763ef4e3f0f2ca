"""ModelActor: owns the engine, its decode loop and the step pump, and puts each step's text into
the requests' mailboxes.

Nothing else holds the engine (tests/test_engine_references.py): the handle gives out what
others need without it, the vocabulary (thread-safe) and snapshots the engine side publishes
(statistics, the prompt caches).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.engine.base import Engine, ModelInfo, PromptCacheView, Vocabulary
from llm_worker_rbee.messages.inference import Abandon, ModelCommand
from llm_worker_rbee.pipeline.decode import DecodeLoop, Delivery, ModelStatistics
from llm_worker_rbee.pipeline.pump import StepPump
from llm_worker_rbee.pipeline.runner import StepRunner
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

INBOX_SIZE = 256


@dataclass(frozen=True)
class ModelHandle:
    """What other actors and the routes hold to talk to the ModelActor: its inbox, the
    model's vocabulary (thread-safe: tokenizing, detokenizing, grammar checks) and the
    snapshots it publishes. Never the engine."""

    info: ModelInfo
    vocab: Vocabulary = field(repr=False)
    _inbox: trio.MemorySendChannel[ModelCommand] = field(repr=False)
    _actor: ModelActor = field(repr=False)

    async def send(self, command: ModelCommand) -> None:
        self._actor.trace("model", command)
        await self._inbox.send(command)

    def statistics(self) -> ModelStatistics:
        return self._actor.statistics()

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self.vocab.tokenize(text, add_special=add_special)

    def choose_slot(self, prompt: Sequence[int], free: Sequence[int]) -> int:
        """The SlotScheduler's chooser: the free slot whose prompt cache matches best, by
        the snapshot the engine published after its last change."""
        return self._actor.prompt_cache().choose_slot(prompt, free)


class ModelActor:
    """Loads the engine, then runs the DecodeLoop through the StepPump: on the engine thread
    in production, as a trio task in virtual time (the runner chooses).

    Commands are applied between steps, so a cancel stops its sequence after the step the
    engine is running; a sequence that ends in the engine (end of generation, limit, stop
    string) is gone before the next step.
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
        self._pump: StepPump | None = None

    def statistics(self) -> ModelStatistics:
        return ModelStatistics(0, 0, 0, 0) if self._loop is None else self._loop.statistics()

    def prompt_cache(self) -> PromptCacheView:
        assert self._loop is not None  # no handle exists before the loop
        return self._loop.prompt_cache()

    async def run(
        self, *, task_status: trio.TaskStatus[ModelHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        engine = await self._runner.load(self._engine_factory)
        # On the engine thread steps run in real time; in virtual time, in trio's clock.
        clock = time.monotonic if self._runner.own_thread else trio.current_time
        loop = self._loop = DecodeLoop(engine, clock)
        pump = self._pump = StepPump(loop, self._deliver, ahead=self._runner.steps_ahead)
        send, receive = trio.open_memory_channel[ModelCommand](INBOX_SIZE)
        try:
            async with send, receive, trio.open_nursery() as nursery:
                task_status.started(ModelHandle(engine.info, engine.vocab, send.clone(), self))
                nursery.start_soon(self._runner.run_pump, pump)
                async for command in receive:
                    pump.submit(command)
                nursery.cancel_scope.cancel()
        finally:
            # Unload through the runner once the pump's nursery (and so the engine thread)
            # has ended: never free a context a step may still be using.
            with trio.CancelScope(shield=True):
                await self._runner.unload(engine.close)

    def _deliver(self, out: list[Delivery]) -> None:
        """Puts each output into its request's mailbox (never blocks: the mailbox merges);
        drops a gone session's sequence."""
        for admit, output in out:
            self.trace(f"session:{admit.job_id}", output)
            if not admit.mailbox.put(output) and output.end is None and self._pump is not None:
                self._pump.submit(Abandon(admit))

"""The actors wired on the fake engine, for tests in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from llm_worker_rbee.actors.model import ModelActor, ModelHandle
from llm_worker_rbee.actors.scheduler import SchedulerHandle, SlotScheduler
from llm_worker_rbee.actors.session import SessionPool
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.pipeline.pump import STEPS_AHEAD
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner


@dataclass
class ActorStack:
    engine: FakeEngine
    model: ModelHandle
    scheduler: SchedulerHandle
    sessions: SessionPool


@asynccontextmanager
async def actor_stack(
    script: FakeScript | None = None,
    *,
    slots: int | None = None,
    max_queue: int | None = None,
    lag: float = 0.0,
    steps_ahead: int = STEPS_AHEAD,
) -> AsyncIterator[ActorStack]:
    """`lag` and `steps_ahead`: see VirtualTimeStepRunner (the engine running ahead)."""
    script = script or FakeScript()
    if slots is not None:
        script.n_slots = slots
    engine = FakeEngine(script)
    runner = VirtualTimeStepRunner(lambda: script.step_latency, lag=lag, steps_ahead=steps_ahead)
    async with trio.open_nursery() as nursery:
        model = await nursery.start(ModelActor(lambda: engine, runner).run)
        scheduler = await nursery.start(
            SlotScheduler(
                script.n_slots,
                2 * script.n_slots if max_queue is None else max_queue,
                chooser=model.choose_slot,
                pool=model.info.kv_pool,
            ).run
        )
        sessions = await nursery.start(SessionPool(model, scheduler).run)
        yield ActorStack(engine, model, scheduler, sessions)
        nursery.cancel_scope.cancel()

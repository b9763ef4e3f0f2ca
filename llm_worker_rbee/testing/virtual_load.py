"""A model load in virtual time that reports its progress like the real one does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from llm_worker_rbee.engine.loading import LoadProgress, LoadStage
from llm_worker_rbee.pipeline.pump import StepPump
from llm_worker_rbee.pipeline.runner import StepRunner

T = TypeVar("T")


class VirtualTimeLoader:
    """A StepRunner whose `load` takes `load_time` of trio time, reported to `progress` as
    the weights coming in over `ticks` equal steps (what llama.cpp's progress callback does
    on the engine thread), and aborted the same way: when `progress.weights` says stop.
    Steps and unloading go to `inner`.
    """

    def __init__(
        self, inner: StepRunner, progress: LoadProgress, load_time: float, ticks: int = 10
    ) -> None:
        self._inner = inner
        self._progress = progress
        self._load_time = load_time
        self._ticks = ticks
        self.own_thread = inner.own_thread
        self.steps_ahead = inner.steps_ahead

    async def run_pump(self, pump: StepPump) -> None:
        await self._inner.run_pump(pump)

    async def load(self, fn: Callable[[], T]) -> T:
        self._progress.enter(LoadStage.LOADING_WEIGHTS)
        for tick in range(1, self._ticks + 1):
            await trio.sleep(self._load_time / self._ticks)
            if not self._progress.weights(tick / self._ticks):
                self._progress.check()  # raises why it stopped
        return fn()

    async def unload(self, fn: Callable[[], T]) -> T:
        return await self._inner.unload(fn)

"""Where the engine runs: on OS threads for real, or in virtual time.

Either way the ModelActor's steps go through the one `StepPump` (pipeline/pump.py): a runner
only chooses its engine side.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from llm_worker_rbee.pipeline.decode import Delivery
from llm_worker_rbee.pipeline.engine_thread import EngineThread
from llm_worker_rbee.pipeline.pump import STEPS_AHEAD, StepPump

T = TypeVar("T")


class StepRunner(Protocol):
    # True: the engine runs on OS threads, in real time (the decode loop's clock is
    # time.monotonic); False: in trio's (virtual) time.
    own_thread: bool
    # The pump's window: steps the engine may run before trio has taken their outputs.
    steps_ahead: int

    async def run_pump(self, pump: StepPump) -> None:
        """Runs the pump's engine half until cancelled."""
        ...

    async def load(self, fn: Callable[[], T]) -> T:
        """Runs the engine's loading."""
        ...

    async def unload(self, fn: Callable[[], T]) -> T:
        """Runs the engine's unloading (after the last step)."""
        ...


class ThreadStepRunner:
    """Steps the engine on an engine thread of its own (`EngineThread`), and runs the load
    and the unload on a trio worker thread, one at a time (a CapacityLimiter(1)): the load
    before the engine thread starts, the unload after it ended, so no two threads ever use
    llama.cpp's context at once. The engine thread is never abandoned on cancel: llama.cpp
    would go on using a context we no longer own, so a cancel waits for the current step
    (tens of milliseconds) to end.
    """

    own_thread = True
    steps_ahead = STEPS_AHEAD

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def run_pump(self, pump: StepPump) -> None:
        await EngineThread(pump, trio.lowlevel.current_trio_token()).run()

    async def load(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def unload(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)


class VirtualTimeStepRunner:
    """The pump's engine half as a trio task: each step takes `latency` seconds of (usually
    virtual) time, and its outputs reach the trio half `lag` seconds after it ended (as if
    the event loop were busy elsewhere), so the engine runs ahead as it does on its thread.

    Threads and trio's autojump clock do not mix, so tests and scenarios use this one.
    """

    own_thread = False

    def __init__(
        self,
        latency: float | Callable[[], float],
        load_time: float = 0.0,
        *,
        lag: float = 0.0,
        steps_ahead: int = STEPS_AHEAD,
    ) -> None:
        self._latency = latency
        self._load_time = load_time
        self._lag = lag
        self.steps_ahead = steps_ahead

    async def run_pump(self, pump: StepPump) -> None:
        await pump.run_engine(VirtualEngineSide(pump, self._step_latency, self._lag))

    def _step_latency(self) -> float:
        return self._latency() if callable(self._latency) else self._latency

    async def load(self, fn: Callable[[], T]) -> T:
        await trio.sleep(self._load_time)
        return fn()

    async def unload(self, fn: Callable[[], T]) -> T:
        return fn()


class VirtualEngineSide:
    """An `EngineSide` in trio's time: the engine half is one trio task, a step a sleep.

    The same task hands each step's outputs to the trio half once their `lag` has passed,
    before any step that ends at or after that instant: one task and no timers of its own
    that could tie, so the order is fixed by this code, not by trio's scheduler.
    """

    def __init__(self, pump: StepPump, latency: Callable[[], float], lag: float) -> None:
        self._pump = pump
        self._latency = latency
        self._lag = lag
        self._changed = trio.Event()
        self._due: deque[tuple[float, list[Delivery]]] = deque()

    async def wait_until(self, ready: Callable[[], bool]) -> bool:
        while not ready():
            with trio.move_on_at(self._due[0][0] if self._due else math.inf):
                await self._changed.wait()
            self._deliver_due()
        return True

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def step(self, step: Callable[[], list[Delivery]]) -> list[Delivery]:
        end = trio.current_time() + self._latency()
        while self._due and self._due[0][0] <= end:
            await trio.sleep_until(self._due[0][0])
            self._deliver_due()
        await trio.sleep_until(end)
        return step()

    def hand_over(self, out: list[Delivery]) -> None:
        if self._lag <= 0:  # the trio half takes it at once, as if the loop were idle
            self._pump.take(out)
        else:
            self._due.append((trio.current_time() + self._lag, out))

    def _deliver_due(self) -> None:
        """Hands over, in order, every step's outputs whose lag has passed."""
        now = trio.current_time()
        while self._due and self._due[0][0] <= now:
            self._pump.take(self._due.popleft()[1])

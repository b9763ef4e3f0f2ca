"""How blocking engine calls are run: on one OS thread for real, or in virtual time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

T = TypeVar("T")


class StepRunner(Protocol):
    # True: the ModelActor steps the engine back to back on a thread of its own
    # (actors/engine_thread.py) and uses `run` for nothing else; False: inline, via `run`.
    own_thread: bool

    async def run(self, fn: Callable[[], T]) -> T:
        """Runs one engine step (or another short engine call)."""
        ...

    async def load(self, fn: Callable[[], T]) -> T:
        """Runs the engine's loading."""
        ...

    async def unload(self, fn: Callable[[], T]) -> T:
        """Runs the engine's unloading (after the last step)."""
        ...


class ThreadStepRunner:
    """Runs engine calls on a worker thread, one at a time.

    llama.cpp is not thread-safe, so a CapacityLimiter(1) serialises every call. The thread
    is never abandoned on cancel: llama.cpp would go on using a context we no longer own, so
    a cancel waits for the current step (tens of milliseconds) to end.
    """

    own_thread = True

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    async def load(self, fn: Callable[[], T]) -> T:
        return await self.run(fn)

    async def unload(self, fn: Callable[[], T]) -> T:
        return await self.run(fn)


class VirtualTimeStepRunner:
    """Runs engine calls inline after sleeping `latency` seconds of (usually virtual) time.

    Threads and trio's autojump clock do not mix, so tests and scenarios use this one.
    """

    own_thread = False

    def __init__(self, latency: float | Callable[[], float], load_time: float = 0.0) -> None:
        self._latency = latency
        self._load_time = load_time

    async def run(self, fn: Callable[[], T]) -> T:
        latency = self._latency() if callable(self._latency) else self._latency
        await trio.sleep(latency)
        return fn()

    async def load(self, fn: Callable[[], T]) -> T:
        await trio.sleep(self._load_time)
        return fn()

    async def unload(self, fn: Callable[[], T]) -> T:
        return fn()

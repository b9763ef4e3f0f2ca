"""EngineThread: the StepPump's engine half on an OS thread of its own, stepping back to back.

The next decode never waits for the event loop: while trio hands one step's text to the
sessions and sockets, the engine is already computing the next. A step's outputs reach trio
as one `run_sync_soon` callback that puts them straight into the requests' mailboxes (no
task in between); steps not yet taken are bounded by the pump's window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

from llm_worker_rbee.pipeline.decode import Delivery
from llm_worker_rbee.pipeline.pump import StepPump

T = TypeVar("T")


class EngineThread:
    """An `EngineSide` that blocks an OS thread: its awaits never suspend."""

    def __init__(self, pump: StepPump, token: trio.lowlevel.TrioToken) -> None:
        self._pump = pump
        self._token = token
        self._wake = threading.Condition()
        self._stopping = False

    async def wait_until(self, ready: Callable[[], bool]) -> bool:
        with self._wake:
            while not (self._stopping or ready()):
                self._wake.wait()
            return not self._stopping

    def notify(self) -> None:
        with self._wake:
            self._wake.notify()

    async def step(self, step: Callable[[], list[Delivery]]) -> list[Delivery]:
        return step()

    def hand_over(self, out: list[Delivery]) -> None:
        self._token.run_sync_soon(self._pump.take, out)

    def stop(self) -> None:
        """Any thread: the engine half ends after its current step."""
        with self._wake:
            self._stopping = True
            self._wake.notify()

    async def run(self) -> None:
        """Runs the pump's engine half on a new thread until cancelled; then stops the thread
        after its current step and returns."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_when_cancelled)
            # Not abandoned on cancel: llama.cpp would go on using a context we no longer
            # own. `_stop_when_cancelled` tells the thread to end after its current step.
            await trio.to_thread.run_sync(run_blocking, self._pump.run_engine(self))
            nursery.cancel_scope.cancel()

    async def _stop_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.stop()


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine whose awaits block the thread instead of suspending (the pump on an
    `EngineThread`), to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the engine pump suspended on its thread")

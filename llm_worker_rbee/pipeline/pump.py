"""StepPump: the one step loop, for the engine thread in production and for virtual time.

The engine half (`run_engine`) takes the commands that arrived, applies them, runs a step and
hands its outputs to the trio half (`take`), which delivers them to the sessions' mailboxes.
The engine half runs ahead of the trio half by at most `ahead` steps and never waits for it
otherwise. Where it runs and how it waits is an `EngineSide`: an OS thread in real time
(`pipeline/engine_thread.py`) or a trio task in virtual time (`pipeline/runner.py`), so the
scenario harness runs the same look-ahead, abandon and stop paths as production.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from llm_worker_rbee.messages.inference import Abandon, ModelCommand
from llm_worker_rbee.pipeline.decode import DecodeLoop, Delivery

log = logging.getLogger(__name__)

# Steps the engine may run before the trio side has taken their outputs.
STEPS_AHEAD = 16


class EngineSide(Protocol):
    """Where the pump's engine half runs and how it waits."""

    async def wait_until(self, ready: Callable[[], bool]) -> bool:
        """Returns True once `ready()` holds, False if the pump must stop first."""
        ...

    def notify(self) -> None:
        """Something `ready` reads has changed. Any thread."""
        ...

    async def step(self, step: Callable[[], list[Delivery]]) -> list[Delivery]:
        """Runs one engine step (taking its time, real or virtual)."""
        ...

    def hand_over(self, out: list[Delivery]) -> None:
        """Has the trio side call `StepPump.take(out)`, in the order handed over."""
        ...


class StepPump:
    """`submit` from any thread; `run_engine` on the engine side; `take` on the trio side."""

    def __init__(
        self,
        loop: DecodeLoop,
        deliver: Callable[[list[Delivery]], None],
        *,
        ahead: int = STEPS_AHEAD,
    ) -> None:
        self._loop = loop
        self._deliver = deliver
        self._ahead = ahead
        self._lock = threading.Lock()
        self._commands: deque[ModelCommand | Abandon] = deque()
        self._in_flight = 0  # steps handed over, not yet taken
        self._side: EngineSide | None = None

    def submit(self, command: ModelCommand | Abandon) -> None:
        """Queues a command; the engine half applies it before its next step."""
        with self._lock:
            self._commands.append(command)
        if self._side is not None:
            self._side.notify()

    async def run_engine(self, side: EngineSide) -> None:
        """The engine half: returns when `side` says stop (or is cancelled, in trio)."""
        self._side = side
        while await side.wait_until(self._has_work):
            with self._lock:
                commands = list(self._commands)
                self._commands.clear()
            out: list[Delivery] = []
            for command in commands:
                out += self._loop.apply(command)
            if self._loop.busy:
                out += await side.step(self._loop.step)
            if not out:
                continue
            if not await side.wait_until(self._window_open):
                return
            with self._lock:
                self._in_flight += 1
            side.hand_over(out)

    def take(self, out: list[Delivery]) -> None:
        """The trio half: one step's outputs arrived; deliver them. Never raises (it runs
        as a callback outside any task in production)."""
        with self._lock:
            self._in_flight -= 1
        if self._side is not None:
            self._side.notify()
        try:
            self._deliver(out)
        except Exception:
            log.exception("delivering a step's outputs failed")

    def _has_work(self) -> bool:
        return bool(self._commands) or self._loop.busy

    def _window_open(self) -> bool:
        return self._in_flight < self._ahead

"""Whether the engine keeps running out of memory: the heartbeat's `degraded`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# This many engine steps in a row that ran out of memory, the first no longer than WINDOW_S
# before the last, make the worker degraded until a step succeeds. One such step is a big
# request at a bad moment; several in a row mean the worker is too small for its load.
STREAK = 3
WINDOW_S = 60.0


class MemoryPressure:
    """Kept by the DecodeLoop (one thread); `degraded` goes out in its statistics."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        streak: int = STREAK,
        window_s: float = WINDOW_S,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self._failures: deque[float] = deque(maxlen=streak)

    def out_of_memory(self) -> None:
        self._failures.append(self._clock())

    def succeeded(self) -> None:
        self._failures.clear()

    @property
    def degraded(self) -> bool:
        failures = self._failures
        full = len(failures) == failures.maxlen
        return full and failures[-1] - failures[0] <= self._window_s

"""Loading progress: one thread-safe object the loader writes and the trio side reads.

The loader (LlamaEngine.load on the engine thread, or the fake's load in virtual time)
moves through the stages and reports how much of the weights are in; llama.cpp's progress
callback is `LoadProgress.weights`, whose False aborts the load (past `--load-timeout`, or
when the worker is told to stop). `/v1/ready`, `/v1/loading/progress` and the heartbeat read
snapshots. The loader never blocks on trio: it stores the new state under a lock and asks
trio, with `TrioToken.run_sync_soon`, to wake whoever waits, which cannot deadlock on
shutdown (after the run has ended the wake-up is simply dropped).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from llm_worker_rbee.engine.base import LoadCancelled, LoadTimeout, ModelLoadError

log = logging.getLogger(__name__)


class LoadStage(enum.StrEnum):
    STARTING = "starting"  # the worker listens; the loader has not begun
    LOADING_WEIGHTS = "loading_weights"
    CREATING_CONTEXT = "creating_context"
    WARMING_UP = "warming_up"
    READY = "ready"
    FAILED = "failed"


# Where each stage starts on the overall 0..1 scale: the weights are most of a load.
STAGE_START: dict[LoadStage, float] = {
    LoadStage.STARTING: 0.0,
    LoadStage.LOADING_WEIGHTS: 0.0,
    LoadStage.CREATING_CONTEXT: 0.9,
    LoadStage.WARMING_UP: 0.95,
    LoadStage.READY: 1.0,
}
WEIGHTS_SPAN = STAGE_START[LoadStage.CREATING_CONTEXT]
# Progress smaller than this is not published (llama.cpp reports every tensor).
MIN_STEP = 0.01


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    stage: LoadStage
    progress: float  # 0..1 over the whole load
    error: str | None = None
    error_code: str | None = None  # ModelLoadError.code: load_failed, load_timeout, ...
    version: int = 0  # grows with every published change

    @property
    def finished(self) -> bool:
        return self.stage in (LoadStage.READY, LoadStage.FAILED)

    def describe(self) -> dict[str, object]:
        return {"stage": self.stage.value, "progress": round(self.progress, 3)}


class LoadProgress:
    """The state of the one model load; see the module docstring.

    Args:
        clock: seconds for the load deadline (trio's clock in virtual-time tests; the
            callback reads it on the loader thread).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = LoadSnapshot(LoadStage.STARTING, 0.0)
        self._timeout = math.inf
        self._deadline = math.inf
        self._cancelled = False
        self._logged_tenths = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._changed = trio.Event()  # touched on the trio thread only

    def begin(self, timeout: float) -> None:
        """On the trio thread, as the load starts: the deadline, and whom to wake."""
        self._token = trio.lowlevel.current_trio_token()
        with self._lock:
            self._timeout = timeout
            self._deadline = self._clock() + timeout

    def snapshot(self) -> LoadSnapshot:
        with self._lock:
            return self._state

    async def wait_change(self, seen: int) -> LoadSnapshot:
        """The first snapshot whose version is not `seen` (at once if there is one)."""
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        while True:
            snapshot = self.snapshot()
            if snapshot.version != seen:
                return snapshot
            await self._changed.wait()

    # The loader's side (any thread).

    def enter(self, stage: LoadStage) -> None:
        """The loader moves on to `stage`.

        Raises:
            LoadTimeout: past the deadline.
            LoadCancelled: the worker is stopping.
        """
        self.check()
        self._publish(stage, STAGE_START[stage])

    def weights(self, fraction: float) -> bool:
        """llama.cpp's progress callback: `fraction` of the weights are in. False aborts."""
        self._publish(LoadStage.LOADING_WEIGHTS, WEIGHTS_SPAN * min(max(fraction, 0.0), 1.0))
        return self.abort_error() is None

    def check(self) -> None:
        """Raises the reason to stop loading, if there is one (see `enter`)."""
        error = self.abort_error()
        if error is not None:
            raise error

    def abort_error(self) -> ModelLoadError | None:
        """Why the load must stop now, or None."""
        with self._lock:
            if self._cancelled:
                return LoadCancelled("the worker was told to stop while loading the model")
            if self._clock() < self._deadline:
                return None
            state = self._state
        return LoadTimeout(
            f"the model did not load within --load-timeout {self._timeout:g} s "
            f"(stopped {state.stage.value} at {state.progress:.0%})"
        )

    # The worker's side (the trio thread).

    def cancel(self) -> None:
        """The worker is stopping: the loader aborts at its next report or stage."""
        with self._lock:
            self._cancelled = True

    def succeed(self) -> None:
        self._publish(LoadStage.READY, 1.0)

    def fail(self, error: ModelLoadError) -> None:
        with self._lock:
            self._state = replace(
                self._state,
                stage=LoadStage.FAILED,
                error=str(error),
                error_code=error.code,
                version=self._state.version + 1,
            )
        self._notify()

    def _publish(self, stage: LoadStage, progress: float) -> None:
        with self._lock:
            old = self._state
            if old.finished:
                return
            progress = max(progress, old.progress)
            if stage is old.stage and progress - old.progress < MIN_STEP and progress < 1.0:
                return
            self._state = LoadSnapshot(stage, progress, version=old.version + 1)
            tenths = math.floor(progress * 10 + 1e-9)
            log_now = tenths > self._logged_tenths
            if log_now:
                self._logged_tenths = tenths
        if log_now:
            log.info("loading the model: %d%% (%s)", tenths * 10, stage.value)
        self._notify()

    def _notify(self) -> None:
        token = self._token
        if token is None:
            return  # the load has not begun: nobody can be waiting yet
        with contextlib.suppress(trio.RunFinishedError):  # the run is over: nobody waits
            token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

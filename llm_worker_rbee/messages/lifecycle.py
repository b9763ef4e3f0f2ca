"""Anyone -> LifecycleActor: drain and stop. The wiring -> LifecycleActor: the transitions
of a start (loading, ready, failed). LifecycleActor -> everyone: state."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import trio

from llm_worker_rbee.messages.session import StopReason


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class Work(Protocol):
    """What the lifecycle drains: the live sessions (the SessionPool)."""

    async def wait_empty(self) -> None: ...

    def abort_all(self, reason: StopReason) -> None: ...


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop taking work, let in-flight work finish (up to the drain timeout), then stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Cancel everything now and stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class Signal:
    """A SIGTERM or SIGINT arrived: the first drains, any later one stops (the actor counts
    them and traces the Drain or Stop it makes of each)."""

    signum: int


@dataclass(frozen=True, slots=True)
class Loading:
    """The HTTP server listens and the model is loading. `applied` is set once the state
    has changed (or could not: the worker stopped)."""

    applied: trio.Event = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ready:
    """The model is loaded and `work` serves: the state is ready, and a drain waits for
    `work` to empty."""

    work: Work = field(compare=False, repr=False)
    applied: trio.Event = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    """The worker cannot serve (its model did not load): stopped at once, `reason` its stop
    reason."""

    reason: str
    applied: trio.Event = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StateChanged:
    """LifecycleActor -> everyone who watches: the worker's new state."""

    state: WorkerState


LifecycleRequest = Drain | Stop
Transition = Loading | Ready | Failed
LifecycleCommand = Drain | Stop | Signal | Transition

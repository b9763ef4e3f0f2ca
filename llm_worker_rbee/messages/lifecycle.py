"""Anyone -> LifecycleActor: drain and stop. LifecycleActor -> everyone: state."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop taking work, let in-flight work finish (up to the drain timeout), then stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Cancel everything now and stop."""

    reason: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """LifecycleActor -> everyone who watches: the worker's new state."""

    state: WorkerState


LifecycleCommand = Drain | Stop

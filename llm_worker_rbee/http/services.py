"""What the routes can reach: handles to the actors, filled in as the worker starts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.actors.jobs import JobBoard
from llm_worker_rbee.actors.lifecycle import LifecycleHandle
from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.actors.scheduler import SchedulerHandle
from llm_worker_rbee.actors.session import SessionPool
from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.loading import LoadProgress
from llm_worker_rbee.history import StatusHistory
from llm_worker_rbee.hive.vitals import Vitals
from llm_worker_rbee.http.errors import ApiError
from llm_worker_rbee.inspection.gpu import AskedDevice
from llm_worker_rbee.inspection.model_report import ModelFile
from llm_worker_rbee.messages.lifecycle import WorkerState
from llm_worker_rbee.metrics import WorkerMetrics


@dataclass
class Services:
    settings: Settings
    lifecycle: LifecycleHandle
    model_id: str
    model: ModelHandle | None = None
    scheduler: SchedulerHandle | None = None
    sessions: SessionPool | None = None
    jobs: JobBoard | None = None
    started_at: float = field(default_factory=trio.current_time)
    wall_clock: Callable[[], float] = time.time
    new_job_id: Callable[[], str] = field(default=lambda: f"job-{uuid.uuid4().hex}")
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    # What the HeartbeatActor knows (hive reachability, VRAM), for GET /heartbeat.
    vitals: Vitals = field(default_factory=Vitals)
    # How far the model's load has come, for /v1/ready, /v1/loading/progress, heartbeats.
    loading: LoadProgress = field(default_factory=LoadProgress)
    # The device the operator asked for (the settings say 0 once the GPU is pinned).
    device: AskedDevice = field(default_factory=AskedDevice)
    # The URLs the HTTP server listens on, once it does (the actual port for --port 0).
    binds: list[str] = field(default_factory=list)
    # The status page's ring of samples (page_status.keep_history fills it once a second).
    history: StatusHistory = field(default_factory=StatusHistory)
    # What the served file says about the model (None: not read, as with the fake engine).
    model_file: ModelFile | None = None

    def job_id_taken(self, job_id: str) -> bool:
        """A running session, a posted job waiting for its reader, or one of either that
        ended lately has this id (HTTP-025)."""
        in_pool = self.sessions is not None and self.sessions.knows(job_id)
        return in_pool or (self.jobs is not None and self.jobs.knows(job_id))

    def cancel_job(self, job_id: str) -> bool:
        """SessionPool.cancel once the sessions exist (the hive may ask before)."""
        return self.sessions is not None and self.sessions.cancel(job_id)

    def serving(self) -> tuple[ModelHandle, SessionPool]:
        """The handles a request needs, or 503 while the worker is not ready for work.

        Raises:
            ApiError: 503 `worker_loading` / `worker_draining` / ... with Retry-After.
        """
        state = self.lifecycle.state
        if state is not WorkerState.READY or self.model is None or self.sessions is None:
            retry = "5" if state in (WorkerState.STARTING, WorkerState.LOADING) else "30"
            raise ApiError(
                503,
                f"the worker is {state.value} and takes no new requests",
                type="unavailable",
                code=f"worker_{state.value}",
                headers={"Retry-After": retry},
            )
        return self.model, self.sessions

    def require_model(self, name: str | None) -> None:
        """A request naming a model must name this worker's (an alias counts).

        Raises:
            ApiError: 404 `model_not_found` naming the model served here.
        """
        if name is not None and name not in self.accepted_model_ids():
            raise ApiError(
                404,
                f"the model {name!r} is not served here; this worker serves {self.model_id!r}",
                param="model",
                code="model_not_found",
            )

    def accepted_model_ids(self) -> set[str]:
        ids = {self.model_id}
        if self.settings.model_ref:
            ids.add(self.settings.model_ref)
        if self.settings.alias:
            ids.update(name.strip() for name in self.settings.alias.split(",") if name.strip())
        return ids

"""A scenario file's shape: TOML validated into frozen pydantic models (unknown keys are
errors), from the engine's script and the timeline of requests and actions to what must be
true afterwards. docs/SCENARIOS.md describes every field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_worker_rbee.hive.scripted import HiveExpect, HiveScript, QueenExpect, QueenScript
from llm_worker_rbee.pipeline.pump import STEPS_AHEAD


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineSpec(_Strict):
    step_latency: float = 0.125
    load_time: float = 0.0
    # Pieces of the reply; "hex:c3a9" is raw bytes (for split UTF-8).
    reply: list[str] = ["Hello", ",", " world", "!"]
    repeat: int = Field(default=1, ge=1)
    replies: dict[str, list[str]] = {}
    prefill_chunk: int = Field(default=512, ge=1)
    fail_at_steps: list[int] = []
    oom_at_steps: list[int] = []
    # Virtual seconds from a step's end until the event loop takes its outputs (busy
    # elsewhere), so the engine runs ahead of the sessions as it does on its thread...
    delivery_lag: float = Field(default=0.0, ge=0.0)
    # ...by at most this many steps (the pump's window; production's STEPS_AHEAD).
    steps_ahead: int = Field(default=STEPS_AHEAD, ge=1)
    # The load fails with this message once the weights are in (after `load_time`).
    load_error: str | None = None


class RequestSpec(_Strict):
    id: str
    at: float = 0.0
    # loading: GET /v1/loading/progress (the other fields but `leave_at` do not apply);
    # jobs: POST /v1/jobs (rbee's job-client), then GET its stream; queen: POST
    # /v1/inference as rbee's queen does (no stream, Accept */*), then GET its `sse_url`;
    # stream: only GET /v1/jobs/{job}/stream (a second reader, or a late one).
    api: Literal["inference", "completions", "chat", "loading", "jobs", "queen", "stream"] = (
        "inference"
    )
    stream: bool = True
    body: dict[str, Any] = {}
    headers: dict[str, str] = {}
    # rbee requests send `id` as their job_id unless this is false.
    send_job_id: bool = True
    raw_body: str | None = None
    leave_at: float | None = None
    leave_after_tokens: int | None = None
    # jobs / queen: when to open the stream (virtual seconds; default at once), or never.
    read_at: float | None = None
    read: bool = True
    # stream: the job id whose stream to open.
    job: str | None = None


class ActionSpec(_Strict):
    at: float
    do: Literal["sigterm", "sigint", "cancel"]
    job: str | None = None


class RequestExpect(_Strict):
    status: int | None = None
    stop_reason: str | None = None
    finish_reason: str | None = None
    tokens: int | None = None
    streamed_tokens: int | None = None
    text: str | None = None
    error_code: str | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    queue_position: int | Literal["none"] | None = None
    job_id: str | None = None
    retry_after: str | None = None
    min_pings: int | None = None
    # Every event of a /v1/loading/progress stream, as "T EVENT STAGE PROGRESS".
    load_events: list[str] | None = None
    # jobs / queen: the status of the POST that created the job.
    posted_status: int | None = None
    # The last data line that is not JSON: "[DONE]", "[CANCELLED]", "[ERROR] ...".
    marker: str | None = None
    # Every line of the stream was a `data:` frame (no `event:` lines, no comments).
    data_only: bool | None = None
    # OpenAI requests with several choices: each choice's text, by index (a whole body's
    # `choices[i]` must carry index i), and, streamed, when each choice's finish arrived.
    choices: list[str] | None = None
    choice_ends: list[float] | None = None


class StateExpect(_Strict):
    at: float
    slots_busy: int | None = None
    queue_depth: int | None = None
    engine_active: int | None = None
    engine_steps: int | None = None  # steps the engine has run so far
    cells_reserved: int | None = None  # KV cells the running requests reserved (shared pool)
    health: int | None = None
    state: str | None = None
    ready: int | None = None  # status of GET /v1/ready
    load_stage: str | None = None  # its `stage`
    load_progress: float | None = None  # its `progress`
    heartbeat_state: str | None = None  # the heartbeat payload's `state`


class Expect(_Strict):
    requests: dict[str, RequestExpect] = {}
    states: list[StateExpect] = []
    # job id -> HTTP status of its DELETE /v1/inference/{job} (the [[action]] "cancel")
    cancels: dict[str, int] = {}
    exit_code: int | None = 0
    stopped_at: float | None = None
    # What the scripted hive received and when, and what the HeartbeatActor logged.
    hive: HiveExpect | None = None
    # What the scripted queen received and when, and what the QueenHeartbeatActor logged.
    queen: QueenExpect | None = None


class Scenario(_Strict):
    description: str
    covers: list[str] = []
    settings: dict[str, Any] = {}
    engine: EngineSpec = EngineSpec()
    request: list[RequestSpec] = []
    action: list[ActionSpec] = []
    expect: Expect = Expect()
    # A scripted hive (hive/scripted.py); without one the worker has no --hive-url.
    hive: HiveScript | None = None
    # A scripted rbee queen (hive/scripted.py); without one the worker has no --queen-url.
    queen: QueenScript | None = None
    # When the harness sends SIGTERM if nothing stopped the worker: default, once every
    # request and action is done.
    end_at: float | None = None
    # Virtual seconds after which the harness gives up on a scenario that does not finish.
    time_limit: float = 600.0

    @classmethod
    def load(cls, path: Path) -> Scenario:
        with path.open("rb") as file:
            return cls.model_validate(tomllib.load(file))


def scenario_paths(targets: list[Path]) -> list[Path]:
    """The scenario files in `targets`: each directory's *.toml, sorted, and each file."""
    paths: list[Path] = []
    for target in targets:
        paths.extend(sorted(target.glob("*.toml")) if target.is_dir() else [target])
    return paths

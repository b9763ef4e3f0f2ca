"""What the status page (GET /ui) shows: the GET /v1/status payload, and the task that keeps
its history.

The payload is built when asked, from the actors' `statistics()` snapshots, the metrics'
recent errors and the history ring (`history.py`); the ring is filled once a second by
`keep_history` on the trio thread. Every field is listed in docs/API.md.
"""

from __future__ import annotations

import trio
from pydantic import BaseModel

from llm_worker_rbee import __version__
from llm_worker_rbee.history import Reading, Sample
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.status import reported_state
from llm_worker_rbee.metrics import histogram_totals

HISTORY_INTERVAL_S = 1.0


class LoadingStatus(BaseModel):
    stage: str  # the load's: starting, loading_weights, creating_context, warming_up, ready...
    progress: float  # 0..1
    error: str | None = None  # why the load failed


class ModelCard(BaseModel):
    id: str
    name: str | None  # the file's general.name
    architecture: str | None
    quantization: str | None
    parameters: int | None
    file_bytes: int | None
    n_ctx: int  # KV cells in all
    n_ctx_train: int | None
    n_ctx_per_slot: int | None  # the most one request may use
    slots: int
    mode: str  # fast (one KV pool) or exact (--batch-invariant: a KV stream per slot)
    backend: str
    device: str
    threads: int
    chat_template: bool | None  # None until the model is loaded


class SlotStatus(BaseModel):
    id: int
    job_id: str | None
    # idle; waiting (granted, not yet in the engine); prefill (no token yet); decode
    phase: str
    prompt_tokens: int | None
    tokens: int | None  # generated so far
    tokens_per_s: float | None  # over the last second; None until it has run a second


class QueueStatus(BaseModel):
    depth: int
    max: int


class KvStatus(BaseModel):
    used: int  # cells the running sequences fill
    total: int
    reserved: int | None  # cells the running requests reserved (fast mode's pool), else None


class Totals(BaseModel):
    requests: int
    prompt_tokens: int
    tokens_generated: int


class HistorySample(BaseModel):
    n: int
    at: float
    tokens_per_s: float
    ttft_ms: float | None
    first_tokens: int
    slots_busy: int
    queue_depth: int
    kv_used: float


class History(BaseModel):
    interval_s: float
    size: int
    samples: list[HistorySample]  # oldest first; with ?since=N only those after N


class RecentErrorStatus(BaseModel):
    at: float  # wall clock, seconds since the epoch
    job_id: str | None  # None: refused before its job id was read
    status: int
    code: str
    message: str


class WorkerStatus(BaseModel):
    """GET /v1/status: everything the status page shows, in one answer."""

    worker_id: str
    version: str
    state: str  # as the hive hears it: loading, ready, busy, degraded, draining, stopped
    started_at: float  # wall clock: a new value means the worker restarted
    uptime_s: float
    loading: LoadingStatus
    model: ModelCard
    slots: list[SlotStatus]
    queue: QueueStatus
    kv: KvStatus
    totals: Totals
    history: History
    errors: list[RecentErrorStatus]  # newest first


def reading(services: Services) -> Reading:
    """The counters the history is made of, read from the snapshots now."""
    scheduler = services.scheduler.statistics() if services.scheduler else None
    model = services.model.statistics() if services.model else None
    n_ctx = services.model.info.n_ctx if services.model else 0
    ttft_sum, ttft_count = histogram_totals(services.metrics.ttft)
    return Reading(
        at=trio.current_time(),
        wall=services.wall_clock(),
        tokens_generated=model.tokens_generated if model else 0,
        ttft_sum=ttft_sum,
        ttft_count=ttft_count,
        slots_busy=scheduler.slots_busy if scheduler else 0,
        queue_depth=scheduler.queue_depth if scheduler else 0,
        kv_used=model.kv_tokens / n_ctx if model and n_ctx else 0.0,
        sequences=model.sequences if model else (),
    )


async def keep_history(services: Services, interval: float = HISTORY_INTERVAL_S) -> None:
    """Records a reading every `interval` seconds, for as long as the worker runs."""
    while True:
        services.history.record(reading(services))
        await trio.sleep(interval)


def worker_status(services: Services, since: int = 0) -> WorkerStatus:
    """The GET /v1/status payload; `since`: only the history samples after that one."""
    settings = services.settings
    scheduler = services.scheduler.statistics() if services.scheduler else None
    model = services.model.statistics() if services.model else None
    pool = services.sessions.statistics() if services.sessions else None
    load = services.loading.snapshot()
    now = trio.current_time()
    wall = services.wall_clock()
    return WorkerStatus(
        worker_id=settings.worker_id,
        version=__version__,
        state=reported_state(services),
        started_at=round(wall - (now - services.started_at), 3),
        uptime_s=round(now - services.started_at, 3),
        loading=LoadingStatus(
            stage=load.stage.value, progress=round(load.progress, 3), error=load.error
        ),
        model=model_card(services),
        slots=slot_statuses(services),
        queue=QueueStatus(
            depth=scheduler.queue_depth if scheduler else 0,
            max=scheduler.max_queue if scheduler else settings.max_queue,
        ),
        kv=KvStatus(
            used=model.kv_tokens if model else 0,
            total=services.model.info.n_ctx if services.model else settings.ctx_tokens,
            reserved=scheduler.cells_reserved if scheduler and scheduler.pool_cells else None,
        ),
        totals=Totals(
            requests=pool.requests_total if pool else 0,
            prompt_tokens=model.prompt_tokens if model else 0,
            tokens_generated=model.tokens_generated if model else 0,
        ),
        history=History(
            interval_s=HISTORY_INTERVAL_S,
            size=services.history.size,
            samples=[_sample(sample) for sample in services.history.since(since)],
        ),
        errors=[
            RecentErrorStatus(
                at=round(wall - (now - recent.at), 3),
                job_id=recent.job_id or None,
                status=recent.error.status,
                code=recent.error.code,
                message=recent.error.message,
            )
            for recent in reversed(services.metrics.recent_errors)
        ],
    )


def model_card(services: Services) -> ModelCard:
    settings = services.settings
    info = services.model.info if services.model else None
    facts = services.model_file
    exact = info.kv_pool is None if info else settings.batch_invariant
    return ModelCard(
        id=services.model_id,
        name=facts.name if facts else None,
        architecture=facts.architecture if facts else None,
        quantization=facts.quantization if facts else None,
        parameters=facts.parameters if facts else None,
        file_bytes=facts.file_bytes if facts else None,
        n_ctx=info.n_ctx if info else settings.ctx_tokens,
        n_ctx_train=info.n_ctx_train if info else None,
        n_ctx_per_slot=info.seq_capacity if info else None,
        slots=settings.slots,
        mode="exact" if exact else "fast",
        backend=settings.backend,
        device=services.device.rbee_name(),
        threads=settings.threads,
        chat_template=(info.chat_template is not None) if info else None,
    )


def slot_statuses(services: Services) -> list[SlotStatus]:
    """Each slot: its job from the scheduler, its progress from the engine's snapshot."""
    if services.scheduler is None or services.model is None:
        return [_idle(slot) for slot in range(services.settings.slots)]
    running = {seq.seq_id: seq for seq in services.model.statistics().sequences}
    rates = services.history.job_rates
    slots = []
    for slot, job in enumerate(services.scheduler.statistics().slot_jobs):
        seq = running.get(slot)
        if job is None:
            slots.append(_idle(slot))
        elif seq is None or seq.job_id != job:  # granted; its Admit not yet applied
            slots.append(_idle(slot).model_copy(update={"job_id": job, "phase": "waiting"}))
        else:
            rate = rates.get(job)
            slots.append(
                SlotStatus(
                    id=slot,
                    job_id=job,
                    phase="decode" if seq.generated else "prefill",
                    prompt_tokens=seq.prompt_tokens,
                    tokens=seq.generated,
                    tokens_per_s=None if rate is None else round(rate, 1),
                )
            )
    return slots


def _idle(slot: int) -> SlotStatus:
    return SlotStatus(
        id=slot, job_id=None, phase="idle", prompt_tokens=None, tokens=None, tokens_per_s=None
    )


def _sample(sample: Sample) -> HistorySample:
    return HistorySample(
        n=sample.n,
        at=sample.at,
        tokens_per_s=sample.tokens_per_s,
        ttft_ms=sample.ttft_ms,
        first_tokens=sample.first_tokens,
        slots_busy=sample.slots_busy,
        queue_depth=sample.queue_depth,
        kv_used=sample.kv_used,
    )

"""GET /v1/ready (a readiness probe) and GET /v1/loading/progress (the load, as SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio
from pydantic import BaseModel
from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.engine.loading import LoadProgress, LoadSnapshot, LoadStage
from llm_worker_rbee.http.errors import error_body
from llm_worker_rbee.http.response_models import ErrorDetail
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import PING, SSE_HEADERS, sse_data
from llm_worker_rbee.messages.lifecycle import WorkerState


class Ready(BaseModel):
    """GET /v1/ready: 200 when the worker takes requests, 503 (same body) otherwise."""

    ready: bool
    state: str  # the worker's: starting, loading, ready, draining, stopped
    stage: str  # the load's: starting, loading_weights, creating_context, warming_up, ...
    progress: float  # of the load, 0..1


class LoadingEvent(BaseModel):
    """One event of GET /v1/loading/progress: `progress`, then `ready` or `failed`."""

    stage: str
    progress: float
    error: ErrorDetail | None = None  # on `failed` only


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/v1/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        """Open (no API key), like /health."""
        state = services.lifecycle.state
        is_ready = state is WorkerState.READY
        body = {"ready": is_ready, "state": state.value, **services.loading.snapshot().describe()}
        return body, 200 if is_ready else 503

    @app.get("/v1/loading/progress")
    async def loading_progress() -> Response:
        frames = _frames(services.loading, services.settings.sse_keepalive)
        response = Response(frames, headers=SSE_HEADERS)
        response.timeout = None
        return response


async def _frames(progress: LoadProgress, keepalive: float) -> AsyncIterator[bytes]:
    """`progress` events as the load moves, ending with `ready` or `failed`; a load that
    has already ended answers with its last event at once."""
    seen = -1
    while True:
        snapshot = await _next_change(progress, seen, keepalive)
        if snapshot is None:
            yield PING
            continue
        seen = snapshot.version
        if snapshot.stage is LoadStage.READY:
            yield sse_data(snapshot.describe(), "ready")
            return
        if snapshot.stage is LoadStage.FAILED:
            yield sse_data(failed_event(snapshot), "failed")
            return
        yield sse_data(snapshot.describe(), "progress")


async def _next_change(progress: LoadProgress, seen: int, keepalive: float) -> LoadSnapshot | None:
    """The next snapshot, or None after `keepalive` seconds without one (send a ping). Not a
    generator, so no yield happens inside the cancel scope."""
    with trio.move_on_after(keepalive):
        return await progress.wait_change(seen)
    return None


def failed_event(snapshot: LoadSnapshot) -> dict[str, Any]:
    message = snapshot.error or "the model did not load"
    error = error_body(message, "server_error", snapshot.error_code, None)
    return {**snapshot.describe(), **error}

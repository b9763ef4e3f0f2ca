"""Health, readiness, models and slots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.http.errors import ApiError
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.system.status import heartbeat_payload, worker_info_payload
from llm_worker_rbee.messages.lifecycle import WorkerState


def rfc3339(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(app: QuartTrio, services: Services) -> None:
    @app.get("/health")
    @app.get("/")  # rbee's hive polls the bare base URL (HEAD works too)
    async def health() -> tuple[dict[str, Any], int]:
        state = services.lifecycle.state
        ready = state is WorkerState.READY
        return {
            "status": "ok" if ready else state.value,
            "state": state.value,
        }, 200 if ready else 503

    # When the worker started (its app is made then): when this model came to be served.
    created = int(services.wall_clock())

    def model_entry(model_id: str) -> dict[str, Any]:
        """One entry both official clients read: OpenAI's `object`, `created` and
        `owned_by`; Anthropic's `type`, `display_name`, `created_at` and `lifecycle`."""
        entry: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "llm-worker-rbee",
            "type": "model",
            "display_name": services.model_id,
            "created_at": rfc3339(created),
            "lifecycle": "active",
        }
        if services.model is not None:
            info = services.model.info
            entry["meta"] = {
                "n_ctx": info.n_ctx,
                "n_ctx_per_slot": info.seq_capacity,
                "n_ctx_train": info.n_ctx_train,
                "n_vocab": info.n_vocab,
                "slots": services.settings.slots,
                "model_ref": services.settings.model_ref,
                # One KV pool all slots draw from (fast mode); false: a stream per slot.
                "kv_shared": info.kv_pool is not None,
                "batch_invariant": info.kv_pool is None,
            }
        return entry

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """One page in OpenAI's list and Anthropic's (`has_more`, `first_id`, `last_id`)."""
        model_id = services.model_id
        return {
            "object": "list",
            "data": [model_entry(model_id)],
            "has_more": False,
            "first_id": model_id,
            "last_id": model_id,
        }

    @app.get("/v1/models/<path:model_id>")
    async def model(model_id: str) -> dict[str, Any]:
        """The served model under any name it answers to (id, --model-ref, an alias)."""
        if model_id not in services.accepted_model_ids():
            raise ApiError(
                404,
                f"the model {model_id!r} is not served here; this worker serves "
                f"{services.model_id!r}",
                param="model",
                code="model_not_found",
            )
        return model_entry(model_id)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format; open without an API key, like /health."""
        body = services.metrics.render()
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/heartbeat")
    async def heartbeat() -> dict[str, Any]:
        """The payload the worker sends the hive, for a hive that pulls."""
        return heartbeat_payload(services)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """rbee's worker contract: the `WorkerInfo` the queen's heartbeat carries. Open
        without the API key, like /health: rbee's callers send none, and it says only what
        the process's argv and /health already tell."""
        return worker_info_payload(services)

    @app.get("/v1/slots")
    async def slots() -> dict[str, Any]:
        if services.scheduler is None:
            return {"slots": [], "queue": []}
        stats = services.scheduler.statistics()
        return {
            "slots": [
                {"id": i, "busy": job is not None, "job_id": job}
                for i, job in enumerate(stats.slot_jobs)
            ],
            "queue": list(stats.queued_jobs),
        }

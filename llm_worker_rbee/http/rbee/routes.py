"""/v1/inference: rbee's native SSE stream (started, token..., error?, end, [DONE]), or, for
rbee's queen, a job to read in a second call (job_routes.py); and cancel."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart import request as http_request
from quart_trio import QuartTrio

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.http.body import parse_body
from llm_worker_rbee.http.errors import ApiError, info_body
from llm_worker_rbee.http.frame_loop import session_frames, sse_response
from llm_worker_rbee.http.rbee.jobs import native_request, post_inference_job
from llm_worker_rbee.http.schemas import InferenceBody
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import open_session
from llm_worker_rbee.http.sse import DONE, sse_data
from llm_worker_rbee.messages.session import Ended, TextDelta


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/inference")
    async def inference() -> Response | dict[str, str]:
        body = await parse_body(InferenceBody)
        if not wants_event_stream(body.stream, http_request.headers.get("Accept", "")):
            return await post_inference_job(services, body, stream_path="/v1/inference")
        request = native_request(services, body)
        job_id = request.job_id
        stream = await open_session(services, request)
        frames = _frames(stream, job_id, services.settings.sse_keepalive)
        return sse_response(stream, frames, job_id)

    @app.delete("/v1/inference/<job_id>")
    async def cancel(job_id: str) -> Response:
        """Cancels a running or queued job (OpenAI requests too). Idempotent: 204 for any job
        this worker has seen, 404 for an id it never saw."""
        if services.sessions is None or not services.sessions.cancel(job_id):
            raise ApiError(404, f"no job {job_id!r} is known here", code="job_not_found")
        return Response(b"", status=204)


def wants_event_stream(stream: bool | None, accept: str) -> bool:
    """One call streaming SSE, or rbee's queen's two calls (a JSON job, then its stream)?

    `stream` decides when given; else an `Accept` naming text/event-stream. The queen sends
    neither (`Accept: */*`), so without both the answer is the JSON job.
    """
    if stream is not None:
        return stream
    return "text/event-stream" in accept.lower()


def _frames(stream: ChoiceStream, job_id: str, keepalive: float) -> AsyncIterator[bytes]:
    accepted = stream.accepted.get(0)
    position = accepted.queue_position if accepted else None
    started: dict[str, Any] = {"type": "started", "job_id": job_id, "queue_position": position}
    index = itertools.count()

    def token(delta: TextDelta) -> list[bytes]:
        return [sse_data({"type": "token", "t": delta.text, "i": next(index)}, "token")]

    def end(ended: Ended) -> list[bytes]:
        frames = []
        if ended.error is not None:
            frames.append(sse_data({"type": "error", **info_body(ended.error)}, "error"))
        end = {
            "type": "end",
            "job_id": job_id,
            "stop_reason": ended.stop_reason,
            "tokens_in": ended.tokens_in,
            "tokens_out": ended.tokens_out,
            "decode_ms": ended.decode_ms,
        }
        return [*frames, sse_data(end, "end"), DONE]

    return session_frames(stream, keepalive, [sse_data(started, "started")], token, end)

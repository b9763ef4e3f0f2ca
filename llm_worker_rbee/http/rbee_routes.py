"""/v1/inference: rbee's native SSE stream (started, token..., error?, end, [DONE]), or, for
rbee's queen, a job to read in a second call (job_routes.py); and cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart import request as http_request
from quart_trio import QuartTrio

from llm_worker_rbee.actors.session import ChoiceStream
from llm_worker_rbee.http.body import parse_body
from llm_worker_rbee.http.errors import ApiError, info_body
from llm_worker_rbee.http.job_routes import native_request, post_inference_job
from llm_worker_rbee.http.schemas import InferenceBody
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import open_session
from llm_worker_rbee.http.sse import DONE, PING, SSE_HEADERS, SessionBody, next_choice, sse_data
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
        response = Response(SessionBody(stream, frames), headers=SSE_HEADERS)
        response.timeout = None
        response.headers["X-Request-Id"] = job_id
        return response

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


async def _frames(stream: ChoiceStream, job_id: str, keepalive: float) -> AsyncIterator[bytes]:
    index = 0
    accepted = stream.accepted.get(0)
    position = accepted.queue_position if accepted else None
    started: dict[str, Any] = {"type": "started", "job_id": job_id, "queue_position": position}
    yield sse_data(started, "started")
    while True:
        item = await next_choice(stream, keepalive)
        if item is None:
            yield PING
            continue
        _, event = item
        if isinstance(event, TextDelta):
            yield sse_data({"type": "token", "t": event.text, "i": index}, "token")
            index += 1
        elif isinstance(event, Ended):
            if event.error is not None:
                yield sse_data({"type": "error", **info_body(event.error)}, "error")
            end = {
                "type": "end",
                "job_id": job_id,
                "stop_reason": event.stop_reason,
                "tokens_in": event.tokens_in,
                "tokens_out": event.tokens_out,
                "decode_ms": event.decode_ms,
            }
            yield sse_data(end, "end")
            break
    yield DONE

"""/v1/inference: rbee's native SSE stream (started, token..., error?, end, [DONE])."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.actors.session import SessionStream
from llm_worker_rbee.http.app import job_id_for, parse_body
from llm_worker_rbee.http.errors import info_body
from llm_worker_rbee.http.openai_routes import ended_error, open_session
from llm_worker_rbee.http.schemas import InferenceBody
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sse import DONE, SSE_HEADERS, SessionBody, sse_data
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.session import Accepted, Ended, Started, TextDelta


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/inference")
    async def inference() -> Response:
        body = await parse_body(InferenceBody)
        model, _ = services.serving()
        job_id = job_id_for(body.job_id)
        request = build_request(
            model, body, body.prompt, job_id=job_id, add_special=True, max_tokens=body.max_tokens
        )
        stream = await open_session(services, request)
        response = Response(SessionBody(stream, _frames(stream, job_id)), headers=SSE_HEADERS)
        response.timeout = None
        response.headers["X-Request-Id"] = job_id
        return response


async def _frames(stream: SessionStream, job_id: str) -> AsyncIterator[bytes]:
    index = 0
    position = stream.accepted.queue_position if stream.accepted else None
    started: dict[str, Any] = {"type": "started", "job_id": job_id, "queue_position": position}
    yield sse_data(started, "started")
    async for event in stream.events:
        if isinstance(event, Accepted | Started):
            continue
        elif isinstance(event, TextDelta):
            yield sse_data({"type": "token", "t": event.text, "i": index}, "token")
            index += 1
        elif isinstance(event, Ended):
            error = ended_error(event) if event.stop_reason != "cancelled" else None
            if error is not None:
                yield sse_data({"type": "error", **info_body(error)}, "error")
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

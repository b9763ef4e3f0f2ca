"""rbee's two-call job API: post a job (JSON answer), then read its stream once.

`POST /v1/jobs` takes rbee's `Operation` JSON (only `infer` runs on a worker); rbee's queen
posts its plain body to `/v1/inference` (rbee_routes.py hands it here). Both answer
`{"job_id", "sse_url"}`; `GET {sse_url}` streams the job as `data:` frames only, because
rbee's readers print any other line (an `event:` line, a `: ping`) as if it were output.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from llm_worker_rbee.actors.jobs import JobBoard, JobClaimError, PostedJob
from llm_worker_rbee.http.body import parse_body, validate_body
from llm_worker_rbee.http.errors import ApiError, bad_request
from llm_worker_rbee.http.frame_loop import session_frames, sse_response
from llm_worker_rbee.http.request_context import deadline_for, job_id_for, log_prompt
from llm_worker_rbee.http.schemas import InferenceBody, OperationBody
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.http.sessions import adopt, open_choices
from llm_worker_rbee.http.sse import DONE, sse_data
from llm_worker_rbee.http.translate import build_request
from llm_worker_rbee.messages.session import (
    Ended,
    ErrorInfo,
    InferenceRequest,
    StopReason,
    TextDelta,
)

# rbee's StopReason (SCREAMING_SNAKE_CASE); a timeout is an error there, with code TIMEOUT.
RBEE_STOP_REASONS: dict[StopReason, str] = {
    "max_tokens": "MAX_TOKENS",
    "eos": "EOS",
    "stop_sequence": "STOP_SEQUENCE",
    "cancelled": "CANCELLED",
    "timeout": "ERROR",
    "error": "ERROR",
}
# rbee's error codes (its worker's `error_codes`) for this worker's own.
RBEE_ERROR_CODES = {
    "request_timeout": "TIMEOUT",
    "resource_exhausted": "VRAM_OOM",
    "engine_error": "INFERENCE_FAILED",
    "internal_error": "INFERENCE_FAILED",
}
CANCELLED_MARK = b"data: [CANCELLED]\n\n"


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/jobs")
    async def post_job() -> dict[str, str]:
        """rbee's job-client: `{"operation": "infer", "prompt", "max_tokens", ...}`."""
        operation = await parse_body(OperationBody)
        if operation.operation != "infer":
            raise bad_request(
                f"operation {operation.operation!r} is not run by a worker; only 'infer' is",
                param="operation",
                code="unsupported_operation",
            )
        body = validate_body(InferenceBody, operation.model_extra or {})
        services.require_model(body.model)
        return await post_inference_job(services, body, stream_path="/v1/jobs")

    @app.get("/v1/jobs/<job_id>/stream")
    @app.get("/v1/inference/<job_id>/stream")
    async def job_stream(job_id: str) -> Response:
        job = _claim(services.jobs, job_id)
        adopt(job.stream)  # from now on a reader who leaves cancels the job
        frames = _frames(job, services.settings.sse_keepalive)
        return sse_response(job.stream, frames, job_id)

    @app.delete("/v1/jobs/<job_id>")
    async def cancel_job(job_id: str) -> Response:
        """Cancels a posted or running job; 204 for any job seen lately, 404 otherwise."""
        if not services.cancel_job(job_id):
            raise ApiError(404, f"no job {job_id!r} is known here", code="job_not_found")
        return Response(b"", status=204)


def native_request(services: Services, body: InferenceBody) -> InferenceRequest:
    """rbee's native request (one SSE call or a posted job) as an InferenceRequest.

    Raises:
        ApiError: 503 while not ready; 400 for `n` other than 1 or a prompt that cannot run.
    """
    model, _ = services.serving()
    if body.n not in (None, 1):
        raise bad_request("rbee's native requests run one sequence; n must be 1", param="n")
    job_id = job_id_for(services, body.job_id)
    log_prompt(services, body.prompt)
    return build_request(
        model,
        body,
        body.prompt,
        job_id=job_id,
        add_special=True,
        max_tokens=body.max_tokens,
        deadline=deadline_for(services, body.timeout),
    )


async def post_inference_job(
    services: Services, body: InferenceBody, *, stream_path: str
) -> dict[str, str]:
    """Admits the job now and keeps it for its reader; answers where to read it."""
    request = native_request(services, body)
    job_id = request.job_id
    stream = await open_choices(services, [request], owned=False)
    assert services.jobs is not None  # set with the sessions, which serving() checked
    services.jobs.post(job_id, stream, model=services.model_id, posted_at=services.wall_clock())
    return {"job_id": job_id, "sse_url": f"{stream_path}/{job_id}/stream"}


def _claim(jobs: JobBoard | None, job_id: str) -> PostedJob:
    """The job for its one reader.

    Raises:
        ApiError: 404 for an unknown job, 409 for a second reader, 410 for an expired job.
    """
    try:
        if jobs is None:
            raise JobClaimError(job_id, "unknown")
        return jobs.claim(job_id)
    except JobClaimError as exc:
        if exc.reason == "claimed":
            raise ApiError(
                409,
                f"job {job_id!r} is already being read; a job has one reader",
                code="job_stream_taken",
            ) from None
        if exc.reason == "expired":
            raise ApiError(
                410,
                f"job {job_id!r} was cancelled: nobody opened its stream in time",
                code="job_expired",
            ) from None
        raise ApiError(404, f"no job {job_id!r} is known here", code="job_not_found") from None


def _frames(job: PostedJob, keepalive: float) -> AsyncIterator[bytes]:
    """rbee's events as `data:` frames, ending with `[DONE]`, `[CANCELLED]` or `[ERROR] …`;
    no `: ping` in silence, as rbee's readers would print it."""
    started = {
        "type": "started",
        "job_id": job.job_id,
        "model": job.model,
        "started_at": str(int(job.posted_at)),  # rbee: Unix seconds, as a string
    }
    index = itertools.count()

    def token(delta: TextDelta) -> list[bytes]:
        # rbee's `i` is a token's index, one frame per token: a delta that covers several
        # (the engine ran ahead of the stream, or text waited for the rest of a character)
        # puts its text on the last, so the frames count the tokens `end.tokens_out` counts.
        count = max(delta.tokens, 1)
        texts = [""] * (count - 1) + [delta.text]
        return [_data({"type": "token", "t": text, "i": next(index)}) for text in texts]

    return session_frames(job.stream, keepalive, [_data(started)], token, end_frames, ping=None)


def end_frames(event: Ended) -> list[bytes]:
    """The error event (on failure), rbee's `end` event and the marker its readers stop at."""
    frames: list[bytes] = []
    if event.error is not None and event.stop_reason != "cancelled":
        frames.append(_data({"type": "error", **rbee_error(event.error)}))
    end: dict[str, Any] = {
        "type": "end",
        "tokens_out": event.tokens_out,
        "decode_time_ms": event.decode_ms,
        "stop_reason": RBEE_STOP_REASONS[event.stop_reason],
    }
    frames.append(_data(end))
    if event.stop_reason == "cancelled":
        frames.append(CANCELLED_MARK)
    elif event.stop_reason in ("timeout", "error"):
        message = event.error.message if event.error else "generation failed"
        frames.append(f"data: [ERROR] {_one_line(message)}\n\n".encode())
    else:
        frames.append(DONE)
    return frames


def rbee_error(error: ErrorInfo) -> dict[str, str]:
    return {"code": RBEE_ERROR_CODES.get(error.code, error.code.upper()), "message": error.message}


def _data(payload: dict[str, Any]) -> bytes:
    return sse_data(payload)  # no event name: a bare `data:` frame


def _one_line(text: str) -> str:
    return " ".join(text.split())

"""Between a route and the SessionPool: starting a request's sessions, waiting until each is
accepted (or refusing the request before a response starts), tying them to the HTTP
request so they stop when its ASGI call ends, and answering one session whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, cast

from quart import Response, request

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.actors.session import SessionPool
from llm_worker_rbee.http.errors import CANCELLED, ApiError, ended_error
from llm_worker_rbee.http.frame_loop import sse_response
from llm_worker_rbee.http.services import Services
from llm_worker_rbee.messages.session import (
    Accepted,
    Ended,
    InferenceRequest,
    Rejected,
    SessionEvent,
)

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
_SESSIONS_KEY = "llm_worker_rbee.sessions"


class SessionGuard:
    """ASGI middleware: when a request's ASGI call ends, however it ends, its sessions stop.

    Quart closes a streaming body when the client leaves, but a response cancelled before its
    body is entered would never be closed; this catches that case too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        owned: list[ChoiceStream] = []
        scope[_SESSIONS_KEY] = owned
        try:
            await self._app(scope, receive, send)
        finally:
            for stream in owned:
                stream.close()


def _start(
    services: Services, requests: list[InferenceRequest], *, owned: bool = True
) -> ChoiceStream:
    """Starts one session per request, owned by this HTTP request (see SessionGuard) unless
    `owned` is false (a posted job: the JobBoard, then its reader, owns it)."""
    _, sessions = services.serving()
    for inference in requests:
        if services.job_id_taken(inference.job_id):
            raise ApiError(
                409,
                f"job id {inference.job_id!r} is taken: a job that is running, waiting for its "
                "reader or ended lately has it; send a new one",
                code="duplicate_job_id",
            )
    stream = sessions.start_choices(requests)
    if owned:
        adopt(stream)
    return stream


def adopt(stream: ChoiceStream) -> None:
    """This HTTP request owns the stream: when its ASGI call ends, the sessions stop."""
    cast(dict[str, Any], request.scope)[_SESSIONS_KEY].append(stream)


def _refuse(sessions: SessionPool, stream: ChoiceStream, first: SessionEvent) -> None:
    """A first event that is not Accepted ends the request before a response starts; its
    job ids are free again (a retry may send the same).

    Raises:
        ApiError: 503 (with Retry-After) when the queue is full; 408 when the deadline had
            passed before the request was even accepted.
    """
    if isinstance(first, Rejected):
        sessions.refuse(stream)
        raise ApiError.from_info(first.error)  # Retry-After: the scheduler's estimate
    if isinstance(first, Ended):
        sessions.refuse(stream)
        raise ApiError.from_info(ended_error(first) or CANCELLED)


async def open_session(services: Services, inference: InferenceRequest) -> ChoiceStream:
    """One session; waits for its first answer before the handler chooses a status."""
    return await open_choices(services, [inference])


async def open_choices(
    services: Services, requests: list[InferenceRequest], *, owned: bool = True
) -> ChoiceStream:
    """Sessions for every choice; waits until each is accepted (or one is refused).
    `owned`: see `_start`."""
    stream = _start(services, requests, owned=owned)
    _, sessions = services.serving()
    accepted = 0
    while accepted < len(requests):
        index, first = await stream.next_event()
        if index in stream.accepted:  # a running choice's event: kept for the answer
            stream.early.append((index, first))
            continue
        _refuse(sessions, stream, first)
        if isinstance(first, Accepted):
            stream.accepted[index] = first
            accepted += 1
    return stream


class TurnReply(Protocol):
    """An API's answer to one session: whole as JSON, or its stream's frames."""

    async def whole(self, stream: ChoiceStream) -> Response: ...

    def frames(self, stream: ChoiceStream, keepalive: float) -> AsyncIterator[bytes]: ...


async def answer(
    services: Services, inference: InferenceRequest, reply: TurnReply, *, stream: bool | None
) -> Response:
    """Starts the session, waits until it is accepted, and answers it streamed (`stream`) or
    whole, with the job id in `X-Request-Id`.

    Raises:
        ApiError: as open_session (409, 503, 408) before the answer starts; as `reply.whole`.
    """
    session = await open_session(services, inference)
    if stream:
        frames = reply.frames(session, services.settings.sse_keepalive)
        return sse_response(session, frames, inference.job_id)
    response = await reply.whole(session)
    response.headers["X-Request-Id"] = inference.job_id
    return response

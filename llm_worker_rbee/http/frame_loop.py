"""One session's events as an API's answer, for the routes whose answer is one choice in
their own shape (rbee's native stream and posted jobs, OpenAI's Responses API, Anthropic's
Messages API): the loop from events to SSE frames, the streamed response that carries them,
and the read to the end for a whole answer. Each API brings its own frame builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

from quart import Response

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.http.errors import ApiError, ended_error
from llm_worker_rbee.http.sse import NOTHING, PING, SSE_HEADERS, SessionBody, next_choice
from llm_worker_rbee.messages.session import Ended, TextDelta

TextFrames = Callable[[TextDelta], Iterable[bytes]]
EndFrames = Callable[[Ended], Iterable[bytes]]


async def session_frames(
    stream: ChoiceStream,
    keepalive: float,
    opening: Iterable[bytes],
    on_text: TextFrames,
    on_end: EndFrames,
    *,
    ping: bytes | None = PING,
) -> AsyncIterator[bytes]:
    """`opening`, then `on_text`'s frames for each text delta, `ping` after each `keepalive`
    seconds of silence (nothing when None), and `on_end`'s frames for the session's end,
    which are the last; NOTHING for an event without frames (see SessionBody)."""
    for frame in opening:
        yield frame
    while True:
        item = await next_choice(stream, keepalive)
        if item is None:
            if ping is not None:
                yield ping
            continue
        _, event = item
        if isinstance(event, TextDelta):
            for frame in list(on_text(event)) or [NOTHING]:
                yield frame
        elif isinstance(event, Ended):
            for frame in on_end(event):
                yield frame
            return
        else:
            yield NOTHING


def sse_response(stream: ChoiceStream, frames: AsyncIterator[bytes], job_id: str) -> Response:
    """The streamed answer: `frames` over the session, no response timeout, the job id in
    `X-Request-Id`."""
    response = Response(SessionBody(stream, frames), headers=SSE_HEADERS)
    response.timeout = None
    response.headers["X-Request-Id"] = job_id
    return response


async def read_to_end(stream: ChoiceStream, on_text: Callable[[TextDelta], object]) -> Ended:
    """For a whole answer: hands each text delta to `on_text` and returns the session's end;
    the stream is closed however this ends.

    Raises:
        ApiError: the session's error, as the status it carries; 500 when the session
            ended without a result.
    """
    try:
        async for _, event in stream:
            if isinstance(event, TextDelta):
                on_text(event)
            elif isinstance(event, Ended):
                error = ended_error(event)
                if error is not None:
                    raise ApiError.from_info(error)
                return event
    finally:
        stream.close()
    raise ApiError(500, "generation ended without a result", type="server_error")

"""Server-sent events: framing, headers, and a body that stops its session when dropped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio

from llm_worker_rbee.actors.choice_stream import ChoiceStream
from llm_worker_rbee.messages.session import Ended, ErrorInfo, SessionEvent

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
# What a frame generator yields for an event that makes no frame (Started, text a tool
# parser holds back): SessionBody joins only events already waiting, and a generator that
# went on to the next event instead would wait for it with the frames in hand.
NOTHING = b""
MAX_JOINED = 256  # frames per write, so one write stays a few tens of KiB
LOST = Ended(
    stop_reason="error",
    tokens_in=0,
    tokens_out=0,
    decode_ms=0,
    error=ErrorInfo(500, "server_error", "internal_error", "the request ended without a result"),
)


def sse_data(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"{head}data: {data}\n\n".encode()


async def next_choice(stream: ChoiceStream, keepalive: float) -> tuple[int, SessionEvent] | None:
    """The next (choice index, event), or None after `keepalive` seconds of silence (send a
    ping). A plain function rather than a generator, so the caller never yields inside this
    scope."""
    with trio.move_on_after(keepalive):
        try:
            return await stream.receive()
        except trio.EndOfChannel:
            # Every session ends with Ended; if one ever does not, the client still gets a
            # terminal error rather than a stream that stops mid-air.
            return (0, LOST)
    return None


class SessionBody:
    """An SSE response body over one session's events.

    Quart calls `aclose()` when the response ends or the client goes away; that stops the
    session even if iteration never began. The ASGI middleware `http/sessions.py:SessionGuard`
    is the second line.
    """

    def __init__(self, stream: ChoiceStream, frames: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._frames = frames
        self._finished = False

    def __aiter__(self) -> SessionBody:
        return self

    async def __anext__(self) -> bytes:
        """The next frame, joined with every frame whose event is already waiting: one socket
        write per wake-up rather than one per token when the engine runs ahead. The frame
        generator yields NOTHING for an event without frames, so joining never waits."""
        if self._finished:
            raise StopAsyncIteration
        frame = NOTHING
        while frame == NOTHING:
            frame = await self._frames.__anext__()
        frames = [frame]
        while self._stream.waiting() and len(frames) < MAX_JOINED:
            try:
                frames.append(await self._frames.__anext__())
            except StopAsyncIteration:
                self._finished = True
                break
        return b"".join(frames)

    async def aclose(self) -> None:
        self._stream.close()
        aclose = getattr(self._frames, "aclose", None)
        if aclose is not None:
            await aclose()

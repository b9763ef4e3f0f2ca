"""Server-sent events: framing, headers, and a body that stops its session when dropped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from llm_worker_rbee.actors.session import SessionStream

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DONE = b"data: [DONE]\n\n"


def sse_data(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"{head}data: {data}\n\n".encode()


class SessionBody:
    """An SSE response body over one session's events.

    Quart calls `aclose()` when the response ends or the client goes away; that stops the
    session even if iteration never began. The ASGI guard in app.py is the second line.
    """

    def __init__(self, stream: SessionStream, frames: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._frames = frames

    def __aiter__(self) -> SessionBody:
        return self

    async def __anext__(self) -> bytes:
        return await self._frames.__anext__()

    async def aclose(self) -> None:
        self._stream.close()
        aclose = getattr(self._frames, "aclose", None)
        if aclose is not None:
            await aclose()

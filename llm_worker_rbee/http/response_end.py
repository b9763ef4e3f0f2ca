"""The send that ends a response completes even when quart-trio cancels its handler.

Hypercorn starts a keep-alive connection's idle timer from that send: the timer closes the
connection after its keep-alive timeout, and at once when the server stops. But the same
send tells the app the stream closed (`http.disconnect`), quart-trio's handler cancels its
nursery on that, and the cancel lands inside the send before the timer has started. So an
idle keep-alive connection had no timer at all: it stayed open until the client closed it,
and a stop waited for it until hypercorn's graceful deadline (#23).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
# Hypercorn's own bookkeeping takes microseconds; the socket write it shields itself.
END_SEND_DEADLINE_S = 1.0


class ResponseEndShield:
    """ASGI middleware: the body message that ends an HTTP response is sent shielded."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_to_the_end(message: dict[str, Any]) -> None:
            ends = message["type"] == "http.response.body" and not message.get("more_body")
            if not ends:
                await send(message)
                return
            deadline = trio.current_time() + END_SEND_DEADLINE_S
            with trio.CancelScope(shield=True, deadline=deadline):
                await send(message)

        await self._app(scope, receive, send_to_the_end)

"""An in-process HTTP client that calls the ASGI app directly: no sockets, virtual time.

It behaves like a client on a real connection: it can go away at a given time or after a
given number of streamed tokens, which the app sees as `http.disconnect`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass
class SseEvent:
    at: float
    name: str | None
    data: str

    def json(self) -> dict[str, Any]:
        value = json.loads(self.data)
        assert isinstance(value, dict)
        return value


@dataclass
class Exchange:
    """Everything one request saw, with virtual times."""

    sent_at: float
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[SseEvent] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    ended_at: float | None = None
    disconnected_at: float | None = None
    # An exception that escaped the app: a real server would log it and drop the connection.
    crashed: str | None = None
    _buffer: str = ""

    @property
    def streaming(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value

    def _feed(self, chunk: bytes, now: float) -> None:
        self._buffer += chunk.decode("utf-8")
        while "\n\n" in self._buffer:
            block, self._buffer = self._buffer.split("\n\n", 1)
            name: str | None = None
            data: list[str] = []
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.pings.append(now)
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
            if data:
                self.events.append(SseEvent(now, name, "\n".join(data)))


# Returns True when the client should go away now.
LeaveRule = Callable[[Exchange], bool]


async def asgi_request(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    leave_at: float | None = None,
    leave_when: LeaveRule | None = None,
) -> Exchange:
    """Sends one request to `app` and collects the response as it streams."""
    exchange = Exchange(sent_at=trio.current_time())
    gone = trio.Event()
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("scenario", 80),
        "extensions": {},
    }
    body_sent = False

    def leave() -> None:
        if not gone.is_set():
            exchange.disconnected_at = trio.current_time()
            gone.set()

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            return  # like a server whose client has left: nothing more is delivered
        now = trio.current_time()
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            exchange.body += chunk
            if exchange.streaming:
                exchange._feed(chunk, now)
            if not message.get("more_body", False):
                exchange.ended_at = now
                gone.set()
            elif leave_when is not None and leave_when(exchange):
                leave()

    async with trio.open_nursery() as nursery:
        if leave_at is not None:

            async def leave_later() -> None:
                await trio.sleep_until(leave_at)
                leave()

            nursery.start_soon(leave_later)
        try:
            await app(scope, receive, send)
        except Exception as exc:  # the harness reports it as a failure instead of dying
            exchange.crashed = repr(exc)
        nursery.cancel_scope.cancel()
    return exchange

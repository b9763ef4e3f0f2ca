"""Hypercorn serving the real app on loopback: what the connections do when the worker stops
(real sockets and real time; no sleeps, and the one bound is a guard against a hang)."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlsplit

import pytest
import trio

from llm_worker_rbee.http import server
from llm_worker_rbee.http.server import serve_http
from llm_worker_rbee.testing.inprocess import inprocess_worker


async def _read_response(stream: trio.SocketStream) -> bytes:
    """One HTTP/1.1 response with a Content-Length body, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some()
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive_some()
    return head


@pytest.mark.behavior("LIFE-007")
async def test_an_idle_keep_alive_connection_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's idle keep-alive connection is closed as the server stops; with hypercorn's
    graceful deadline an hour away, only that ends the serve (#23: it waited out the
    deadline, because the connection's idle timer never started)."""
    monkeypatch.setattr(server, "GRACEFUL_TIMEOUT_S", 3600.0)
    async with inprocess_worker() as worker:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            serve = partial(serve_http, worker.app, host="127.0.0.1", port=0)
            binds = await nursery.start(partial(serve, shutdown_trigger=stop.wait))
            url = urlsplit(binds[0])
            assert url.hostname is not None and url.port is not None
            connection = await trio.open_tcp_stream(url.hostname, url.port)
            async with connection:
                request = b"GET /health HTTP/1.1\r\nhost: worker\r\n\r\n"
                await connection.send_all(request)
                assert (await _read_response(connection)).startswith(b"HTTP/1.1 200")
                # Kept alive: a second request on the same connection is served.
                await connection.send_all(request)
                assert (await _read_response(connection)).startswith(b"HTTP/1.1 200")
                stop.set()
                with trio.fail_after(60):  # a hang guard: the fix closes it at once
                    assert await connection.receive_some() == b""

"""A small reference hive, for trying the protocol and for tests (its command line,
`llm-worker-rbee hive-stub`, is `stub_cli.py`).

It accepts workers over HTTP (`POST /v1/workers/{ready,heartbeat,gone}`) and over the
WebSocket control channel (`/v1/workers/ws`), records everything they send (printed as JSON
lines, and readable at `GET /v1/hive/events`), answers a heartbeat from a worker it does not
know with 404, and sends commands to a worker on the control channel:

    curl -s localhost:7000/v1/hive/workers
    curl -s localhost:7000/v1/hive/workers/w1/commands -d '{"command": "cancel", "job_id": "j"}'

docs/HIVE_PROTOCOL.md describes every message.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import count
from typing import Any

import trio
from quart import request, websocket
from quart_trio import QuartTrio

from llm_worker_rbee.hive.client import GONE_PATH, HEARTBEAT_PATH, READY_PATH, WEBSOCKET_PATH
from llm_worker_rbee.http.errors import error_body
from llm_worker_rbee.http.server import serve_http
from llm_worker_rbee.messages.hive import COMMANDS

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 5.0
_KINDS = {READY_PATH: "ready", HEARTBEAT_PATH: "heartbeat", GONE_PATH: "gone"}


class NoChannel(LookupError):
    """The worker has no open control channel (it is unknown, or speaks plain HTTP)."""


@dataclass(frozen=True)
class HiveEvent:
    """One thing the stub received (or saw happen), in arrival order."""

    seq: int
    at: float  # Unix seconds
    transport: str  # "http" or "ws"
    kind: str  # ready, heartbeat, gone, ack, connected, disconnected
    worker_id: str | None
    status: int | None  # what the stub answered (ready/heartbeat/gone)
    authorized: bool
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Channel:
    """One open WebSocket: what to send it, and the scope that ends it."""

    outbox: trio.MemorySendChannel[str]
    scope: trio.CancelScope
    worker_id: str | None = None


@dataclass
class _AwaitedAck:
    worker_id: str
    arrived: trio.Event = field(default_factory=trio.Event)
    ack: dict[str, Any] | None = None


class HiveStub:
    """The hive's state and behaviour; `app()` serves it.

    Args:
        token: when set, requests without `Authorization: Bearer TOKEN` get 401.
        echo: called with each event as one JSON line (the CLI prints them).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        echo: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events: list[HiveEvent] = []
        # worker_id -> {"transport", "ready": payload, "heartbeat": last payload or None}
        self.workers: dict[str, dict[str, Any]] = {}
        # When set, every ready/heartbeat/gone is answered with this status (e.g. 503) and
        # changes nothing: a hive in trouble, for trying the worker's backoff.
        self.fail_with: int | None = None
        # When set, ready/heartbeat/gone are recorded but never answered: a hung hive.
        self.silent = False
        self._token = token
        self._echo = echo
        self._clock = clock
        self._seq = count(1)
        self._command_ids = count(1)
        self._channels: dict[str, _Channel] = {}
        self._open: list[_Channel] = []
        self._awaited: dict[str, _AwaitedAck] = {}
        self._changed = trio.Event()

    # What a worker sends.

    def receive(self, transport: str, kind: str, payload: Any, *, authorized: bool = True) -> int:
        """Records one ready/heartbeat/gone and returns the HTTP status to answer with."""
        body = payload if isinstance(payload, dict) else {"payload": payload}
        worker_id = body.get("worker_id")
        worker_id = worker_id if isinstance(worker_id, str) else None
        if not authorized:
            status = 401
        elif self.fail_with is not None:
            status = self.fail_with
        elif worker_id is None:
            status = 400
        elif kind == "ready":
            self.workers[worker_id] = {"transport": transport, "ready": body, "heartbeat": None}
            status = 200
        elif kind == "heartbeat" and worker_id not in self.workers:
            status = 404  # restarted, or never registered: the worker registers again
        elif kind == "heartbeat":
            self.workers[worker_id]["heartbeat"] = body
            status = 200
        else:
            self.workers.pop(worker_id, None)
            status = 200
        self._record(transport, kind, worker_id, status, authorized, body)
        return status

    def _record(
        self,
        transport: str,
        kind: str,
        worker_id: str | None,
        status: int | None,
        authorized: bool,
        body: dict[str, Any],
    ) -> None:
        event = HiveEvent(
            next(self._seq), self._clock(), transport, kind, worker_id, status, authorized, body
        )
        self.events.append(event)
        if self._echo is not None:
            self._echo(json.dumps(event.to_json(), sort_keys=True))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[list[HiveEvent]], bool]) -> list[HiveEvent]:
        """Blocks until `condition(events)` holds; returns the events then."""
        while not condition(self.events):
            await self._changed.wait()
        return self.events

    def authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        expected = f"Bearer {self._token}".encode()
        return hmac.compare_digest((authorization or "").encode(), expected)

    # What the hive sends.

    async def command(
        self, worker_id: str, command: str, job_id: str | None = None
    ) -> dict[str, Any]:
        """Sends a command on the worker's control channel and returns its ack.

        Raises:
            NoChannel: the worker has no open WebSocket.
        """
        channel = self._channels.get(worker_id)
        if channel is None:
            raise NoChannel(f"worker {worker_id!r} has no open control channel")
        command_id = f"c{next(self._command_ids)}"
        awaited = self._awaited[command_id] = _AwaitedAck(worker_id)
        message: dict[str, Any] = {"type": "command", "id": command_id, "command": command}
        if job_id is not None:
            message["job_id"] = job_id
        try:
            await channel.outbox.send(json.dumps(message))
            await awaited.arrived.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise NoChannel(f"worker {worker_id!r}: the control channel closed") from None
        finally:
            del self._awaited[command_id]
        assert awaited.ack is not None
        return awaited.ack

    def close_channels(self) -> None:
        """Ends every open WebSocket (as a hive going away would)."""
        for channel in self._open:
            channel.scope.cancel()

    # The control channel.

    async def serve_channel(self) -> None:
        """One worker's WebSocket, for as long as it is open."""
        send, receive = trio.open_memory_channel[str](16)
        with trio.CancelScope() as scope:
            channel = _Channel(send, scope)
            self._open.append(channel)
            self._record("ws", "connected", None, None, True, {})
            try:
                async with send, receive, trio.open_nursery() as nursery:
                    nursery.start_soon(_forward, receive.clone())
                    while True:
                        await self._on_message(channel, await websocket.receive())
            finally:
                self._open.remove(channel)
                if channel.worker_id and self._channels.get(channel.worker_id) is channel:
                    del self._channels[channel.worker_id]
                self._record("ws", "disconnected", channel.worker_id, None, True, {})

    async def _on_message(self, channel: _Channel, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ack":
            awaited = self._awaited.get(str(message.get("id")))
            worker_id = awaited.worker_id if awaited else channel.worker_id
            self._record("ws", "ack", worker_id, None, True, message)
            if awaited is not None:
                awaited.ack = message
                awaited.arrived.set()
        elif kind in ("ready", "heartbeat", "gone"):
            payload = message.get("payload")
            if self.silent:
                self._record("ws", kind, channel.worker_id, None, True, {"payload": payload})
                return
            status = self.receive("ws", kind, payload)
            worker_id = payload.get("worker_id") if isinstance(payload, dict) else None
            if isinstance(worker_id, str):
                channel.worker_id = worker_id
                self._channels[worker_id] = channel
            reply = {"type": "reply", "id": message.get("id"), "status": status}
            await channel.outbox.send(json.dumps(reply))

    def app(self) -> QuartTrio:
        return _app(self)


async def _forward(outbox: trio.MemoryReceiveChannel[str]) -> None:
    async with outbox:
        async for text in outbox:
            await websocket.send(text)


def _app(stub: HiveStub) -> QuartTrio:
    app = QuartTrio("llm_worker_rbee.hive_stub")

    for path, kind in _KINDS.items():

        async def worker_call(kind: str = kind) -> tuple[dict[str, Any], int]:
            authorized = stub.authorized(request.headers.get("Authorization"))
            payload = await request.get_json(force=True, silent=True)
            if stub.silent:
                stub._record("http", kind, None, None, authorized, {"payload": payload})
                await trio.sleep_forever()
            status = stub.receive("http", kind, payload, authorized=authorized)
            if status == 200:
                return {"ok": True}, 200
            message = {401: "bad or missing token", 400: "no worker_id"}.get(
                status, "unknown worker: register again"
            )
            return error_body(message, "hive_error", f"http_{status}", None), status

        app.add_url_rule(path, f"worker_{kind}", worker_call, methods=["POST"])

    @app.websocket(WEBSOCKET_PATH)
    async def control_channel() -> tuple[dict[str, Any], int] | None:
        if not stub.authorized(websocket.headers.get("Authorization")):
            return error_body("bad or missing token", "hive_error", "http_401", None), 401
        await websocket.accept()
        await stub.serve_channel()
        return None

    @app.get("/v1/hive/events")
    async def events() -> dict[str, Any]:
        since = request.args.get("since", default=0, type=int)
        return {"events": [e.to_json() for e in stub.events if e.seq > since]}

    @app.get("/v1/hive/workers")
    async def workers() -> dict[str, Any]:
        return {
            "workers": {
                worker_id: {**record, "channel": worker_id in stub._channels}
                for worker_id, record in stub.workers.items()
            }
        }

    @app.post("/v1/hive/workers/<worker_id>/commands")
    async def send_command(worker_id: str) -> tuple[dict[str, Any], int]:
        body = await request.get_json(force=True, silent=True) or {}
        command, job_id = body.get("command"), body.get("job_id")
        if command not in COMMANDS:
            message = f"command must be one of {', '.join(COMMANDS)}"
            return error_body(message, "invalid_request_error", "bad_command", "command"), 400
        try:
            with trio.fail_after(ACK_TIMEOUT_S):
                ack = await stub.command(worker_id, command, job_id)
        except NoChannel as exc:
            return error_body(str(exc), "not_found", "no_channel", None), 404
        except trio.TooSlowError:
            message = f"no ack within {ACK_TIMEOUT_S:g} s"
            return error_body(message, "timeout", "no_ack", None), 504
        return {"ack": ack}, 200

    return app


async def serve_stub(
    stub: HiveStub,
    *,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Any],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves the stub with hypercorn until `shutdown_trigger` returns; its WebSockets are
    closed first, so a stop is quick (as when a real hive goes away)."""

    async def stop() -> None:
        await shutdown_trigger()
        stub.close_channels()

    await serve_http(
        stub.app(), host=host, port=port, shutdown_trigger=stop, task_status=task_status
    )


@asynccontextmanager
async def running_stub(stub: HiveStub, port: int = 0) -> AsyncIterator[str]:
    """The stub served on 127.0.0.1 (port 0: any free one); yields its URL, and leaving
    stops it, its WebSockets closed first."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve_stub, stub, host="127.0.0.1", port=port, shutdown_trigger=stop.wait)
        )
        try:
            yield binds[0]
        finally:
            stop.set()

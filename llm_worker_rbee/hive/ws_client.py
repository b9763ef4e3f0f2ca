"""The hive over one WebSocket (trio-websocket): payloads up, commands down, acks back.

Wire format (JSON text frames; docs/HIVE_PROTOCOL.md):

    worker -> hive  {"type": "ready" | "heartbeat" | "gone", "id": 7, "payload": {...}}
    hive -> worker  {"type": "reply", "id": 7, "status": 200}       (404: forgotten)
    hive -> worker  {"type": "command", "id": "c1", "command": "cancel", "job_id": "j"}
    worker -> hive  {"type": "ack", "id": "c1", "command": "cancel", "ok": true, ...}

The connection is opened by the first call that needs it and kept open; when it closes on
its own the listener hears of it, and the next call (the caller's retry, with its backoff)
opens a new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from llm_worker_rbee.hive.client import (
    WEBSOCKET_PATH,
    HiveListener,
    Payload,
    auth_headers,
    reply_for_status,
)
from llm_worker_rbee.messages.hive import CallKind, CommandAck, HiveCommand, HiveOutcome, HiveReply

log = logging.getLogger(__name__)

# The caller bounds every call (connecting included); this bounds only the close handshake.
CLOSE_TIMEOUT_S = 1.0
_CONNECT_ERRORS = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError)


@dataclass
class _Pending:
    answered: trio.Event = field(default_factory=trio.Event)
    reply: HiveReply | None = None


@dataclass
class _Link:
    """One connection: its WebSocket, the scope that ends it, the calls awaiting a reply."""

    ws: WebSocketConnection
    scope: trio.CancelScope
    pending: dict[int, _Pending] = field(default_factory=dict)
    # Closed on purpose (goodbye, or a hive that stopped answering): no news for anyone.
    closing: bool = False

    @property
    def usable(self) -> bool:
        return not self.closing and self.ws.closed is None

    def fail_pending(self) -> None:
        for pending in self.pending.values():
            if pending.reply is None:
                pending.reply = HiveReply(HiveOutcome.FAILED, "the connection closed")
                pending.answered.set()


class WebSocketHiveClient:
    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._nursery: trio.Nursery | None = None
        self._listener: HiveListener | None = None
        self._link: _Link | None = None
        self._connecting = trio.Lock()
        self._next_id = 0

    async def run(
        self,
        listener: HiveListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._listener = listener
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def ready(self, payload: Payload) -> HiveReply:
        return await self._request("ready", payload)

    async def heartbeat(self, payload: Payload) -> HiveReply:
        return await self._request("heartbeat", payload)

    async def gone(self, payload: Payload) -> HiveReply:
        """Says goodbye, then closes the channel: nothing is sent after `gone`."""
        reply = await self._request("gone", payload)
        link = self._link
        if link is not None:
            link.closing = True
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await link.ws.aclose()
        return reply

    async def _request(self, kind: CallKind, payload: Payload) -> HiveReply:
        try:
            link = await self._connection()
        except _CONNECT_ERRORS as exc:
            return HiveReply(HiveOutcome.FAILED, f"cannot connect: {_describe(exc)}")
        self._next_id += 1
        request_id = self._next_id
        pending = link.pending[request_id] = _Pending()
        message = {"type": kind, "id": request_id, "payload": payload}
        try:
            await link.ws.send_message(json.dumps(message))
            await pending.answered.wait()
        except ConnectionClosed:
            return HiveReply(HiveOutcome.FAILED, "the connection closed")
        except trio.Cancelled:
            # The caller gave up waiting (its deadline): a hive that does not answer on this
            # connection may never; the next call opens a new one.
            self._abandon(link)
            raise
        finally:
            del link.pending[request_id]
        assert pending.reply is not None
        return pending.reply

    def _abandon(self, link: _Link) -> None:
        link.closing = True
        link.scope.cancel()
        if self._link is link:
            self._link = None

    async def _connection(self) -> _Link:
        async with self._connecting:
            if self._link is not None and self._link.usable:
                return self._link
            if self._nursery is None:
                raise ConnectionClosed(None)  # not running
            link: _Link = await self._nursery.start(self._hold)
            return link

    async def _hold(self, *, task_status: trio.TaskStatus[_Link]) -> None:
        """Opens a connection, hands it over, and reads it until it closes.

        Errors before the hand-over go to whoever asked for the connection; after it, a
        connection that closed on its own is news for the listener. The TCP stream is
        opened and closed here (`open_websocket_url` would leave it open when the hive
        rejects the handshake).
        """
        link: _Link | None = None
        stream = await _open_stream(self.url + WEBSOCKET_PATH)
        try:
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    _host_header(self.url),
                    urlsplit(self.url).path + WEBSOCKET_PATH,
                    extra_headers=[
                        (k.encode(), v.encode()) for k, v in auth_headers(self._token).items()
                    ],
                )
                link = self._link = _Link(ws, nursery.cancel_scope)
                task_status.started(link)
                await self._read(link)
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the library's reader task failed
            if link is None:
                raise _first_error(group) from None
            log.debug("hive %s: the connection ended: %r", self.url, group)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if link is not None:
                if self._link is link:
                    self._link = None
                link.fail_pending()
                if not link.closing and self._listener is not None:
                    self._listener.on_connection_lost()

    async def _read(self, link: _Link) -> None:
        """Until the connection closes. Returns normally then: an exception leaving the
        nursery would cancel the library's reader before the close handshake is done."""
        while True:
            try:
                message = _parse(await link.ws.get_message())
            except ConnectionClosed:
                return
            kind = message.get("type")
            if kind == "reply":
                self._answer(link, message)
            elif kind == "command":
                ack = await self._obey(message)
                try:
                    await link.ws.send_message(json.dumps(ack))
                except ConnectionClosed:
                    return
            else:
                log.debug("hive %s sent an unknown message: %r", self.url, message)

    def _answer(self, link: _Link, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        pending = link.pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None or pending.reply is not None:
            return  # a reply to a call whose caller gave up
        status = message.get("status")
        pending.reply = (
            reply_for_status(status)
            if isinstance(status, int)
            else HiveReply(HiveOutcome.FAILED, f"a reply without a status: {message!r}")
        )
        pending.answered.set()

    async def _obey(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            command = HiveCommand.from_json(message)
        except ValueError as exc:
            return {
                "type": "ack",
                "id": message.get("id"),
                "command": message.get("command"),
                "ok": False,
                "detail": str(exc),
            }
        assert self._listener is not None
        ack: CommandAck = await self._listener.on_command(command)
        return ack.to_json()


async def _open_stream(url: str) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    if secure:
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    return await trio.open_tcp_stream(host, port)


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    host = parts.hostname or ""
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The reader's own error out of a group (a rejected handshake, a reset)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, trio.Cancelled):
            return error
    return group


def _parse(message: str | bytes) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        value = json.loads(message)
        if isinstance(value, dict):
            return value
    return {"type": None, "raw": message[:200]}


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, HandshakeError) and cause is not None and not str(exc):
        exc = cause
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

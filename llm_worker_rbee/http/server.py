"""Serving the app with hypercorn's trio worker."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

# The worker drains its own work first (LifecycleActor); by the time hypercorn is told to
# stop, every stream has its final event queued, so this only covers flushing them.
GRACEFUL_TIMEOUT_S = 3.0
_CANNOT_BIND = {errno.EADDRINUSE, errno.EACCES}


class ListenError(Exception):
    """The worker cannot listen where it was told to; the message is one line."""


async def serve_http(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 30
    try:
        await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
    except BaseExceptionGroup as group:  # hypercorn binds in a nursery, before started
        exc = first_exception(group, OSError)
        problem = None if exc is None else listen_problem(exc, host, port, config.bind[0])
        if problem is None:
            raise
        raise ListenError(problem) from None


def listen_problem(exc: OSError, host: str, port: int, bind: str) -> str | None:
    """One line naming the flag at fault for a socket that could not be bound, or None for
    an error that is not about where to listen."""
    if isinstance(exc, socket.gaierror):  # the name does not resolve to an address
        hint = ""
        if "," in host:
            hint = "; it takes one address (llama-server's comma-separated list is not read)"
        return f"--host {host}: cannot listen there: {exc.strerror}{hint}"
    if exc.errno == errno.EADDRNOTAVAIL:  # an address this machine does not have
        return f"--host {host}: cannot listen on {bind}: ({exc.strerror})"
    if exc.errno not in _CANNOT_BIND:
        return None
    reason = "it is already in use" if exc.errno == errno.EADDRINUSE else f"({exc.strerror})"
    return f"--port {port}: cannot listen on {bind}: {reason}"


_E = TypeVar("_E", bound=BaseException)


def first_exception(group: BaseExceptionGroup[BaseException], kind: type[_E]) -> _E | None:
    """The first exception of `kind` in a (nested) exception group, or None."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := first_exception(exc, kind)):
            return found
    return None

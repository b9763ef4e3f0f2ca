"""HeartbeatActor: registers with the hive, keeps telling it the truth, obeys its commands.

Serving never waits on the hive: the actor reports `started` at once and talks in the
background. Registration (`ready`) is retried with exponential backoff and jitter until the
hive acknowledges it; then a heartbeat goes every `interval`, and at once when the worker's
state changes. Failures back off the same way and are logged once per transition. A 404
(the hive restarted and forgot this worker) starts a new registration. When the worker has
stopped, it says goodbye (bounded to 2 s) before the worker exits. Protocol and payloads:
docs/HIVE_PROTOCOL.md.

The hive client reaches the actor only through its `HeartbeatHandle`: a command from the
hive, or a dropped control channel, is a message to the actor's inbox.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from llm_worker_rbee.actors.lifecycle import LifecycleHandle
from llm_worker_rbee.hive.client import HiveClient
from llm_worker_rbee.hive.vitals import Vitals, VramReader
from llm_worker_rbee.messages.hive import (
    CallKind,
    CommandAck,
    ConnectionLost,
    HeartbeatCommand,
    HiveCall,
    HiveCommand,
    HiveOutcome,
    HiveReply,
    Obey,
)
from llm_worker_rbee.messages.lifecycle import Drain, Stop, WorkerState
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
# A backoff delay is shortened by up to this fraction, at random, so workers that lost the
# same hive do not all come back at the same instant.
JITTER = 0.5
CALL_TIMEOUT_S = 5.0
GOODBYE_TIMEOUT_S = 2.0
INBOX_SIZE = 16

Payload = dict[str, Any]


class Reports(Protocol):
    """The payloads, built from what the actors know at the moment of sending."""

    def ready(self) -> Payload: ...

    def heartbeat(self) -> Payload: ...

    def gone(self, reason: str) -> Payload: ...


def backoff_delay(attempt: int, cap: float, random: float) -> float:
    """The wait before retry number `attempt` (0 for the first).

    0.5 s doubling, capped at `cap` (the heartbeat interval), then shortened by up to
    `JITTER` of itself: `random` in [0, 1) is how much.
    """
    base = min(cap, BACKOFF_FIRST_S * 2.0 ** min(attempt, 32))
    return base * (1 - JITTER * random)


@dataclass(frozen=True)
class HeartbeatHandle:
    """What the hive client (as its `HiveListener`) and the wiring hold."""

    _inbox: trio.MemorySendChannel[HeartbeatCommand] = field(repr=False)
    _trace: Tracer = field(repr=False)
    _said_goodbye: trio.Event = field(repr=False)

    async def on_command(self, command: HiveCommand) -> CommandAck:
        """Hands a hive command to the actor; returns its ack."""
        self._trace("heartbeat", command)
        reply, answer = trio.open_memory_channel[CommandAck](1)
        async with answer:
            await self._inbox.send(Obey(command, reply))
            return await answer.receive()

    def on_connection_lost(self) -> None:
        """Never blocks: a full inbox already wakes the actor."""
        try:
            self._inbox.send_nowait(ConnectionLost())
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("heartbeat inbox full or closed; dropped a lost-connection notice")

    async def wait_goodbye(self) -> None:
        """Blocks until the goodbye is said (or there was nobody to say it to)."""
        await self._said_goodbye.wait()


class HeartbeatActor:
    """The worker's side of the hive conversation; see the module docstring."""

    def __init__(
        self,
        *,
        client: HiveClient | None,
        interval: float,
        lifecycle: LifecycleHandle,
        reports: Reports,
        cancel_job: Callable[[str], bool],
        vitals: Vitals,
        wall_clock: Callable[[], float],
        jitter: Callable[[], float],
        vram: VramReader | None = None,
        worker_id: str = "",
        tracer: Tracer = no_trace,
    ) -> None:
        self._client = client
        self._interval = interval
        self._lifecycle = lifecycle
        self._reports = reports
        self._cancel_job = cancel_job
        self._vitals = vitals
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._vram = vram
        self._worker_id = worker_id
        self._trace = tracer
        self._registered = False
        self._reported: WorkerState | None = None
        self._wake = trio.Event()
        self._said_goodbye = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[HeartbeatHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[HeartbeatCommand](INBOX_SIZE)
        handle = HeartbeatHandle(send, self._trace, self._said_goodbye)
        if self._client is None:
            log.info("no --hive-url: not registering with a hive")
            self._said_goodbye.set()
            task_status.started(handle)
            while self._vram is not None:  # /heartbeat still shows the GPU's memory
                await self._refresh_vram()
                await trio.sleep(self._interval)
            await trio.sleep_forever()
        self._vitals.hive = "connecting"
        async with send, receive, trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_inbox, receive)
            await nursery.start(self._client.run, handle)
            task_status.started(handle)
            async with trio.open_nursery() as talk:
                talk.start_soon(self._converse)
                await self._follow_states()
                talk.cancel_scope.cancel()
            await self._say_goodbye()
            self._said_goodbye.set()
            nursery.cancel_scope.cancel()

    async def _follow_states(self) -> None:
        """Wakes the conversation when the state changes to one the hive has not heard;
        returns once the worker stopped."""
        state = self._lifecycle.state
        while state is not WorkerState.STOPPED:
            state = await self._lifecycle.wait_state_change(state)
            if state is not self._reported:
                self._wake.set()

    async def _converse(self) -> None:
        await self._refresh_vram()
        state = self._lifecycle.state
        while state in (WorkerState.STARTING, WorkerState.LOADING):
            state = await self._lifecycle.wait_state_change(state)
        if state is not WorkerState.READY:
            return  # stopping before it ever served: nothing to announce
        while True:
            await self._register()
            await self._beat_until_forgotten()

    async def _register(self) -> None:
        attempt = 0
        while (await self._call("ready", self._reports.ready())).outcome is not HiveOutcome.OK:
            await trio.sleep(backoff_delay(attempt, self._interval, self._jitter()))
            attempt += 1
        self._registered = True

    async def _beat_until_forgotten(self) -> None:
        failures = 0
        next_at = trio.current_time() + self._interval
        while True:
            # A state the hive has not heard yet goes out at once, not at the next tick.
            if self._lifecycle.state is self._reported:
                with trio.move_on_at(next_at):
                    await self._wake.wait()
            if self._lifecycle.state is WorkerState.STOPPED:
                await trio.sleep_forever()  # the goodbye says it; this task is being cancelled
            await self._refresh_vram()
            reply = await self._call("heartbeat", self._reports.heartbeat())
            if reply.outcome is HiveOutcome.OK:
                failures = 0
                next_at = trio.current_time() + self._interval
            elif reply.outcome is HiveOutcome.NOT_FOUND:
                return
            else:
                next_at = trio.current_time() + backoff_delay(
                    failures, self._interval, self._jitter()
                )
                failures += 1

    async def _call(self, kind: CallKind, payload: Payload) -> HiveReply:
        # A ready says "ready": a worker registering again while draining follows it with
        # a heartbeat at once.
        self._reported = WorkerState.READY if kind == "ready" else self._lifecycle.state
        self._trace("hive", HiveCall(kind, str(payload.get("state", self._reported.value))))
        reply = HiveReply(HiveOutcome.FAILED, f"no answer within {CALL_TIMEOUT_S:g} s")
        with trio.move_on_after(CALL_TIMEOUT_S):
            reply = await self._ask(kind, payload)
        # Whatever woke the conversation while the call was out, the call has answered it.
        self._wake = trio.Event()
        self._trace("heartbeat", reply)
        self._note(kind, reply)
        return reply

    async def _ask(self, kind: CallKind, payload: Payload) -> HiveReply:
        assert self._client is not None
        call = {
            "ready": self._client.ready,
            "heartbeat": self._client.heartbeat,
            "gone": self._client.gone,
        }[kind]
        try:
            return await call(payload)
        except Exception as exc:  # a broken hive must never take the worker down
            return HiveReply(HiveOutcome.FAILED, f"{type(exc).__name__}: {exc}")

    def _note(self, kind: CallKind, reply: HiveReply) -> None:
        """Keeps /heartbeat truthful and logs once per transition, never once per failure."""
        vitals = self._vitals
        url = self._client.url if self._client else ""
        if reply.outcome is HiveOutcome.OK or (
            reply.outcome is HiveOutcome.NOT_FOUND and kind == "heartbeat"
        ):
            vitals.hive_last_success = self._wall_clock()
            if kind == "ready":
                log.info("registered with hive %s as %s", url, self._worker_id)
            elif reply.outcome is HiveOutcome.NOT_FOUND:
                log.warning("hive %s does not know this worker (404): registering again", url)
            elif vitals.hive == "unreachable":
                log.info("hive %s is reachable again", url)
            vitals.hive = "reachable"
            return
        if vitals.hive != "unreachable":
            log.warning(
                "hive %s is unreachable (%s %s): serving goes on, retrying with backoff",
                url,
                kind,
                reply.detail,
            )
        vitals.hive = "unreachable"

    async def _say_goodbye(self) -> None:
        # A worker whose model did not load was never registered, but the hive that
        # started it is waiting for its ready: the goodbye tells it why it will not come.
        if not self._registered and not self._lifecycle.failed:
            return
        reason = self._lifecycle.stop_reason or "stopped"
        payload = self._reports.gone(reason)
        self._trace("hive", HiveCall("gone", "stopped"))
        url = self._client.url if self._client else ""
        # The worker is on its way out: shielded, with its own deadline.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + GOODBYE_TIMEOUT_S):
            reply = await self._ask("gone", payload)
            self._trace("heartbeat", reply)
            if reply.outcome is HiveOutcome.FAILED:
                log.warning("could not say goodbye to hive %s: %s", url, reply.detail)
            else:
                log.info("said goodbye to hive %s (%s)", url, reason)
            return
        log.warning("could not say goodbye to hive %s within %g s", url, GOODBYE_TIMEOUT_S)

    async def _refresh_vram(self) -> None:
        if self._vram is None:
            return
        sample = await trio.to_thread.run_sync(self._vram)
        vitals = self._vitals
        vitals.vram_used_bytes = sample.used_bytes if sample else None
        vitals.vram_total_bytes = sample.total_bytes if sample else None
        vitals.vram_process_bytes = sample.process_bytes if sample else None

    async def _serve_inbox(self, inbox: trio.MemoryReceiveChannel[HeartbeatCommand]) -> None:
        """What the hive client passes on: commands to obey, a dropped control channel."""
        async for message in inbox:
            if isinstance(message, ConnectionLost):
                self._on_connection_lost()
                continue
            ack = self._obey(message.command)
            # A client that stopped waiting (cancelled) has closed its end: nobody to tell.
            with message.reply, contextlib.suppress(trio.BrokenResourceError):
                message.reply.send_nowait(ack)  # its buffer holds the one ack

    def _obey(self, command: HiveCommand) -> CommandAck:
        """drain / shutdown go to the LifecycleActor, cancel to the SessionPool."""
        ok, detail = True, ""
        if command.command == "drain":
            self._lifecycle.request(Drain("hive: drain"))
            detail = "draining"
        elif command.command == "shutdown":
            self._lifecycle.request(Stop("hive: shutdown"))
            detail = "stopping"
        elif command.command == "cancel":
            assert command.job_id is not None
            ok = self._cancel_job(command.job_id)
            detail = "cancelled" if ok else f"no job {command.job_id}"
        else:
            detail = "pong"
        ack = CommandAck(command.id, command.command, ok, detail)
        what = f"cancel {command.job_id}" if command.command == "cancel" else command.command
        log.info("hive command %s: %s", what, detail)
        self._trace("hive", ack)
        return ack

    def _on_connection_lost(self) -> None:
        """The control channel dropped: speak up now, which reconnects (with backoff)."""
        if self._vitals.hive == "reachable":
            self._wake.set()

"""LifecycleActor: the worker's state machine, signals, drain and stop."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Protocol

import trio

from llm_worker_rbee.messages.lifecycle import (
    Drain,
    LifecycleCommand,
    StateChanged,
    Stop,
    WorkerState,
)
from llm_worker_rbee.messages.session import StopReason
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

# After the drain deadline, cancelled sessions get this long to send their final event.
ABORT_GRACE_S = 2.0


class Work(Protocol):
    """What the lifecycle drains: the live sessions."""

    async def wait_empty(self) -> None: ...

    def abort_all(self, reason: StopReason) -> None: ...


@dataclass(frozen=True)
class LifecycleHandle:
    _inbox: trio.MemorySendChannel[LifecycleCommand] = field(repr=False)
    _actor: LifecycleActor = field(repr=False)

    @property
    def state(self) -> WorkerState:
        return self._actor.state

    @property
    def stop_reason(self) -> str | None:
        """Why the worker stopped ("SIGTERM", "hive: drain", ...); None until it has."""
        return self._actor.stop_reason

    @property
    def failed(self) -> bool:
        """The worker stopped because it could not serve (its model did not load)."""
        return self._actor.failed

    def set_state(self, state: WorkerState) -> None:
        self._actor.set_state(state)

    def fail(self, reason: str) -> None:
        """The worker cannot serve: stopped at once, with `reason` as the stop reason."""
        self._actor.fail(reason)

    def attach_work(self, work: Work) -> None:
        self._actor.work = work

    def signal(self, signum: int) -> None:
        """A SIGTERM/SIGINT arrived: the first drains, any later one stops at once."""
        self.request(self._actor.on_signal(signum))

    def request(self, command: LifecycleCommand) -> None:
        """Ask for a drain or a stop; never blocks (a full inbox already holds one)."""
        self._actor.trace("lifecycle", command)
        try:
            self._inbox.send_nowait(command)
        except trio.WouldBlock:
            log.warning("lifecycle inbox full; dropped %s", command)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("already stopped; ignored %s", command)

    async def wait_state_change(self, last: WorkerState) -> WorkerState:
        return await self._actor.wait_state_change(last)

    async def wait_stopped(self) -> None:
        await self._actor.stopped.wait()


class LifecycleActor:
    """starting -> loading -> ready -> draining -> stopped.

    The first SIGTERM/SIGINT (or a Drain) drains: new work is refused, in-flight work may
    finish until `drain_timeout`, the rest is cancelled with a final event. A second signal
    (or a Stop) cancels everything at once.
    """

    def __init__(
        self, *, drain_timeout: float, handle_signals: bool = True, tracer: Tracer = no_trace
    ) -> None:
        self.trace = tracer
        self._signals_seen = 0
        self.drain_timeout = drain_timeout
        self.handle_signals = handle_signals
        self.state = WorkerState.STARTING
        self.work: Work | None = None
        self.stopped = trio.Event()
        self.stop_reason: str | None = None
        self.failed = False
        self._changed = trio.Event()
        self._drain_scope: trio.CancelScope | None = None

    def set_state(self, state: WorkerState) -> None:
        if state is self.state or self.state is WorkerState.STOPPED:
            return
        if self.state is WorkerState.DRAINING and state is not WorkerState.STOPPED:
            return  # nothing leaves draining but stopping
        log.info("state %s -> %s", self.state.value, state.value)
        self.state = state
        self.trace("all", StateChanged(state))
        self._changed.set()
        self._changed = trio.Event()
        if state is WorkerState.STOPPED:
            self.stopped.set()

    def fail(self, reason: str) -> None:
        if self.state is WorkerState.STOPPED:
            return
        log.error("stopping: %s", reason)
        self.failed = True
        self.stop_reason = reason
        self.set_state(WorkerState.STOPPED)

    async def wait_state_change(self, last: WorkerState) -> WorkerState:
        while self.state is last:
            await self._changed.wait()
        return self.state

    async def run(
        self, *, task_status: trio.TaskStatus[LifecycleHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[LifecycleCommand](16)
        async with send, receive, trio.open_nursery() as nursery:
            if self.handle_signals:
                await nursery.start(self._watch_signals, send.clone())
            task_status.started(LifecycleHandle(send.clone(), self))
            nursery.start_soon(self._serve_commands, receive, nursery)
            await self.stopped.wait()
            nursery.cancel_scope.cancel()

    async def _serve_commands(
        self, inbox: trio.MemoryReceiveChannel[LifecycleCommand], nursery: trio.Nursery
    ) -> None:
        async for command in inbox:
            if self.stopped.is_set():
                return
            if isinstance(command, Drain):
                if self.state is WorkerState.DRAINING:
                    continue
                log.info("draining: %s", command.reason)
                self.set_state(WorkerState.DRAINING)
                nursery.start_soon(self._drain, command.reason)
            elif self._drain_scope is not None:
                log.info("stopping now: %s", command.reason)
                self._drain_scope.cancel()
            else:
                log.info("stopping now: %s", command.reason)
                self.set_state(WorkerState.DRAINING)
                nursery.start_soon(self._stop_now, command.reason)

    async def _watch_signals(
        self,
        inbox: trio.MemorySendChannel[LifecycleCommand],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with inbox:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for signum in signals:
                    command = self.on_signal(signum)
                    self.trace("lifecycle", command)
                    await inbox.send(command)

    def on_signal(self, signum: int) -> LifecycleCommand:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        return Drain(name) if self._signals_seen == 1 else Stop(f"second {name}")

    async def _drain(self, reason: str) -> None:
        with trio.CancelScope() as self._drain_scope:
            self._drain_scope.deadline = trio.current_time() + self.drain_timeout
            if self.work is not None:
                await self.work.wait_empty()
        if self._drain_scope.cancelled_caught:
            log.info("drain ended before in-flight work finished; cancelling the rest")
        await self._stop_now(reason)

    async def _stop_now(self, reason: str) -> None:
        if self.work is not None:
            self.work.abort_all("cancelled")
            with trio.move_on_after(ABORT_GRACE_S):
                await self.work.wait_empty()
        self.stop_reason = reason
        self.set_state(WorkerState.STOPPED)

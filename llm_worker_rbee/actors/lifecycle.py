"""LifecycleActor: the worker's state machine, signals, drain and stop.

Everything reaches it through its inbox (messages/lifecycle.py): drain and stop requests
(hive, admin route, signals) and the start's transitions (loading, ready, failed), which
the wiring awaits until applied. What others read is a frozen `LifecycleStatistics`,
replaced at each change.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.messages.lifecycle import (
    Drain,
    Failed,
    LifecycleCommand,
    LifecycleRequest,
    Loading,
    Ready,
    Signal,
    StateChanged,
    Stop,
    Transition,
    Work,
    WorkerState,
)
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

# After the drain deadline, cancelled sessions get this long to send their final event.
ABORT_GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class LifecycleStatistics:
    state: WorkerState
    # Why the worker stopped ("SIGTERM", "hive: drain", ...); None until it has.
    stop_reason: str | None = None
    # The worker stopped because it could not serve (its model did not load).
    failed: bool = False


@dataclass(frozen=True)
class LifecycleHandle:
    _inbox: trio.MemorySendChannel[LifecycleCommand] = field(repr=False)
    _actor: LifecycleActor = field(repr=False)

    def statistics(self) -> LifecycleStatistics:
        return self._actor.statistics()

    @property
    def state(self) -> WorkerState:
        return self.statistics().state

    @property
    def stop_reason(self) -> str | None:
        return self.statistics().stop_reason

    @property
    def failed(self) -> bool:
        return self.statistics().failed

    async def loading(self) -> None:
        """The model is loading; returns once the state says so."""
        await self._transition(Loading(trio.Event()))

    async def ready(self, work: Work) -> None:
        """The worker serves `work`; returns once the state is ready."""
        await self._transition(Ready(work, trio.Event()))

    async def fail(self, reason: str) -> None:
        """The worker cannot serve: stopped at once, with `reason` as the stop reason."""
        await self._transition(Failed(reason, trio.Event()))

    def signal(self, signum: int) -> None:
        """A SIGTERM/SIGINT arrived: the first drains, any later one stops."""
        self._send_nowait(Signal(signum))

    def request(self, command: LifecycleRequest) -> None:
        """Ask for a drain or a stop; never blocks (a full inbox already holds one)."""
        self._actor.trace("lifecycle", command)
        self._send_nowait(command)

    async def wait_state_change(self, last: WorkerState) -> WorkerState:
        return await self._actor.wait_state_change(last)

    async def wait_stopped(self) -> None:
        await self._actor.stopped.wait()

    def _send_nowait(self, command: LifecycleCommand) -> None:
        try:
            self._inbox.send_nowait(command)
        except trio.WouldBlock:
            log.warning("lifecycle inbox full; dropped %s", command)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("already stopped; ignored %s", command)

    async def _transition(self, command: Transition) -> None:
        try:
            await self._inbox.send(command)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the actor has stopped: no state left to change
        await command.applied.wait()


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
        self._work: Work | None = None
        self._snapshot = LifecycleStatistics(WorkerState.STARTING)
        self.stopped = trio.Event()
        self._changed = trio.Event()
        self._drain_scope: trio.CancelScope | None = None

    def statistics(self) -> LifecycleStatistics:
        return self._snapshot

    @property
    def state(self) -> WorkerState:
        return self._snapshot.state

    @property
    def stop_reason(self) -> str | None:
        return self._snapshot.stop_reason

    async def wait_state_change(self, last: WorkerState) -> WorkerState:
        while self.state is last:
            await self._changed.wait()
        return self.state

    async def run(
        self, *, task_status: trio.TaskStatus[LifecycleHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[LifecycleCommand](16)
        async with send, receive:
            async with trio.open_nursery() as nursery:
                if self.handle_signals:
                    await nursery.start(self._watch_signals, send.clone())
                task_status.started(LifecycleHandle(send.clone(), self))
                nursery.start_soon(self._serve_commands, receive, nursery)
                await self.stopped.wait()
                nursery.cancel_scope.cancel()
            # Transitions still in the inbox change nothing now, but their senders wait.
            while True:
                try:
                    command = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if isinstance(command, Transition):
                    command.applied.set()

    async def _serve_commands(
        self, inbox: trio.MemoryReceiveChannel[LifecycleCommand], nursery: trio.Nursery
    ) -> None:
        async for command in inbox:
            if isinstance(command, Transition):
                self._apply(command)
                command.applied.set()
                continue
            if self.stopped.is_set():
                continue
            if isinstance(command, Signal):
                command = self._on_signal(command.signum)
                self.trace("lifecycle", command)
            if isinstance(command, Drain):
                if self.state is WorkerState.DRAINING:
                    continue
                log.info("draining: %s", command.reason)
                self._set_state(WorkerState.DRAINING)
                # The scope exists before the drain task runs: a Stop read right after this
                # Drain cuts the drain short instead of racing it with a stop of its own.
                deadline = trio.current_time() + self.drain_timeout
                self._drain_scope = trio.CancelScope(deadline=deadline)
                nursery.start_soon(self._drain, self._drain_scope, command.reason)
            elif self._drain_scope is not None:
                log.info("stopping now: %s", command.reason)
                self._drain_scope.cancel()
            else:
                log.info("stopping now: %s", command.reason)
                self._set_state(WorkerState.DRAINING)
                nursery.start_soon(self._stop_now, command.reason)

    def _apply(self, command: Transition) -> None:
        if isinstance(command, Loading):
            self._set_state(WorkerState.LOADING)
        elif isinstance(command, Ready):
            self._work = command.work
            self._set_state(WorkerState.READY)
        elif self.state is not WorkerState.STOPPED:
            log.error("stopping: %s", command.reason)
            self._set_state(WorkerState.STOPPED, reason=command.reason, failed=True)

    def _set_state(
        self, state: WorkerState, *, reason: str | None = None, failed: bool = False
    ) -> None:
        current = self.state
        if state is current or current is WorkerState.STOPPED:
            return
        if current is WorkerState.DRAINING and state is not WorkerState.STOPPED:
            return  # nothing leaves draining but stopping
        log.info("state %s -> %s", current.value, state.value)
        self._snapshot = LifecycleStatistics(state, reason, failed)
        self.trace("all", StateChanged(state))
        self._changed.set()
        self._changed = trio.Event()
        if state is WorkerState.STOPPED:
            self.stopped.set()

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
                    await inbox.send(Signal(signum))

    def _on_signal(self, signum: int) -> LifecycleRequest:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        return Drain(name) if self._signals_seen == 1 else Stop(f"second {name}")

    async def _drain(self, scope: trio.CancelScope, reason: str) -> None:
        with scope:
            if self._work is not None:
                await self._work.wait_empty()
        if scope.cancelled_caught:
            log.info("drain ended before in-flight work finished; cancelling the rest")
        await self._stop_now(reason)

    async def _stop_now(self, reason: str) -> None:
        if self._work is not None:
            self._work.abort_all("cancelled")
            with trio.move_on_after(ABORT_GRACE_S):
                await self._work.wait_empty()
        self._set_state(WorkerState.STOPPED, reason=reason)

"""SlotScheduler: N slots, the KV cells they share, and a bounded FIFO queue in front."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.engine.cells import fits
from llm_worker_rbee.messages.slots import (
    Acquire,
    Granted,
    Leave,
    Queued,
    QueueFull,
    SchedulerCommand,
    SlotReply,
)
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

INBOX_SIZE = 256

# (prompt tokens, free slots) -> the slot to grant. The engine's choice: the slot whose
# prompt cache shares the longest prefix (see Engine.choose_slot).
SlotChooser = Callable[[Sequence[int], Sequence[int]], int]


def first_free(prompt: Sequence[int], free: Sequence[int]) -> int:
    """The default SlotChooser: the lowest free slot."""
    return free[0]


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    slots_total: int
    slots_busy: int
    queue_depth: int
    max_queue: int
    slot_jobs: tuple[str | None, ...]
    queued_jobs: tuple[str, ...]
    rejected_total: int
    # The shared KV pool (None: each slot owns its cells) and what running requests reserved.
    pool_cells: int | None = None
    cells_reserved: int = 0


@dataclass(frozen=True)
class SchedulerHandle:
    _inbox: trio.MemorySendChannel[SchedulerCommand] = field(repr=False)
    _actor: SlotScheduler = field(repr=False)

    async def send(self, command: SchedulerCommand) -> None:
        self._actor.trace("scheduler", command)
        await self._inbox.send(command)

    def statistics(self) -> SchedulerStatistics:
        return self._actor.statistics()

    async def wait_idle(self) -> None:
        """Block until no slot is busy and nobody is queued."""
        await self._actor.wait_idle()


class SlotScheduler:
    """Grants slots first come, first served; which free slot, the injected chooser decides.

    With a shared KV pool (`pool`), a request also needs its cells (`Acquire.cells`): it is
    granted a slot only while the reservations of the running requests and its own fit the
    pool, and otherwise waits in the queue; the queue is served in order, so a long request
    at its head is not overtaken forever by short ones (engine/cells.py).

    A request that leaves (finished, cancelled, or its client went away) sends Leave; that
    frees its slot or takes it out of the queue, whichever applies, so nothing leaks even
    when a grant and a departure cross.
    """

    def __init__(
        self,
        n_slots: int,
        max_queue: int,
        *,
        tracer: Tracer = no_trace,
        chooser: SlotChooser = first_free,
        pool: int | None = None,
    ) -> None:
        self.trace = tracer
        self._chooser = chooser
        self._owners: list[str | None] = [None] * n_slots
        self._pool = pool
        self._reserved = [0] * n_slots  # cells reserved by each slot's request
        self._queue: OrderedDict[str, Acquire] = OrderedDict()
        self._max_queue = max_queue
        self._rejected = 0
        self._changed = trio.Event()

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            slots_total=len(self._owners),
            slots_busy=sum(owner is not None for owner in self._owners),
            queue_depth=len(self._queue),
            max_queue=self._max_queue,
            slot_jobs=tuple(self._owners),
            queued_jobs=tuple(self._queue),
            rejected_total=self._rejected,
            pool_cells=self._pool,
            cells_reserved=sum(self._reserved),
        )

    def _idle(self) -> bool:
        return not self._queue and all(owner is None for owner in self._owners)

    async def wait_idle(self) -> None:
        while not self._idle():
            await self._changed.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[SchedulerHandle] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, receive = trio.open_memory_channel[SchedulerCommand](INBOX_SIZE)
        async with send, receive:
            task_status.started(SchedulerHandle(send.clone(), self))
            async for command in receive:
                if isinstance(command, Acquire):
                    self._acquire(command)
                else:
                    self._leave(command)
                self._changed.set()
                self._changed = trio.Event()

    def _acquire(self, command: Acquire) -> None:
        if command.job_id in self._queue or command.job_id in self._owners:
            log.warning("job %s asked for a second slot; refused", command.job_id)
            self._reply(command.job_id, command.reply, QueueFull(len(self._queue)))
            return
        if not self._queue and self._can_start(command):
            self._grant(command)
            return
        if len(self._queue) >= self._max_queue:
            self._rejected += 1
            self._reply(command.job_id, command.reply, QueueFull(len(self._queue)))
            return
        if self._reply(command.job_id, command.reply, Queued(len(self._queue))):
            self._queue[command.job_id] = command

    def _can_start(self, command: Acquire) -> bool:
        """A slot is free and, from a shared pool, the request's cells fit beside the rest."""
        return None in self._owners and fits(sum(self._reserved), command.cells, self._pool)

    def _grant(self, command: Acquire) -> bool:
        slot = self._choose(command.prompt_tokens)
        if not self._reply(command.job_id, command.reply, Granted(slot)):
            return False
        self._owners[slot] = command.job_id
        self._reserved[slot] = command.cells
        return True

    def _choose(self, prompt: Sequence[int]) -> int:
        free = [slot for slot, owner in enumerate(self._owners) if owner is None]
        slot = self._chooser(prompt, free)
        if slot not in free:
            log.error("slot chooser picked %d, not one of the free slots %s", slot, free)
            return free[0]
        return slot

    def _leave(self, command: Leave) -> None:
        if command.job_id in self._queue:
            del self._queue[command.job_id]
            return
        if command.job_id in self._owners:
            slot = self._owners.index(command.job_id)
            self._owners[slot] = None
            self._reserved[slot] = 0
            self._grant_waiting()

    def _grant_waiting(self) -> None:
        """Grants the head of the queue while it can start (a freed slot, or freed cells
        letting several short requests in at once); a head that cannot waits, in order."""
        while self._queue:
            head = next(iter(self._queue.values()))
            if not self._can_start(head):
                return
            del self._queue[head.job_id]
            self._grant(head)  # a head whose session is gone is skipped

    def _reply(
        self, job_id: str, channel: trio.MemorySendChannel[SlotReply], reply: SlotReply
    ) -> bool:
        self.trace(f"session:{job_id}", reply)
        return _send_nowait(channel, reply)


def _send_nowait(channel: trio.MemorySendChannel[SlotReply], reply: SlotReply) -> bool:
    try:
        channel.send_nowait(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        return False
    return True

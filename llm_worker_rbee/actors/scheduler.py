"""SlotScheduler: N slots, the KV cells they share, and a bounded queue of requests in
front of them."""

from __future__ import annotations

import logging
import math
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
# Weight of the newest slot hold in the recent mean job time (an exponentially weighted
# mean): high enough that the slow first jobs of a cold worker are forgotten within a few
# waves, low enough that one odd job does not swing Retry-After.
MEAN_WEIGHT = 0.3

# (prompt tokens, free slots) -> the slot to grant. The engine's choice: the slot whose
# prompt cache shares the longest prefix (see engine/base.py: PromptCacheView).
SlotChooser = Callable[[Sequence[int], Sequence[int]], int]


_Reply = trio.MemorySendChannel[SlotReply]


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
    # Recent mean seconds a job holds its slot; None until a job has given one back.
    mean_job_s: float | None = None
    # The shared KV pool (None: each slot owns its cells) and what running requests reserved.
    pool_cells: int | None = None
    cells_reserved: int = 0

    def retry_after(self) -> int:
        """Seconds until a refused request is likely to find a place: the waiting jobs times
        the recent mean job time over the slots, rounded up, at least 1."""
        waiting = len(self.queued_jobs)
        if self.mean_job_s is None or waiting == 0:
            return 1
        return max(1, math.ceil(waiting * self.mean_job_s / self.slots_total))


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

    The queue holds requests, not jobs: the choices of one request (OpenAI `n`, a list of
    prompts; Acquire's `group`) that find no free slot wait together in one place, so a
    request of 20 choices takes one of the `max_queue` places and runs in waves. When a slot
    frees, the request at the head of the queue gets it for its next choice and, if more of
    its choices wait, goes to the back: requests take turns, a large one never starves the
    ones behind it.

    With a shared KV pool (`pool`), a job also needs its cells (`Acquire.cells`): it is
    granted a slot only while the reservations of the running jobs and its own fit the
    pool, and otherwise waits; the head of the queue is served first, so a long request is
    not overtaken forever by short ones (engine/cells.py).

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
        self._granted_at: list[float] = [0.0] * n_slots
        self._pool = pool
        self._reserved = [0] * n_slots  # cells reserved by each slot's job
        # Waiting requests in turn order, each with its waiting jobs in order.
        self._queue: OrderedDict[str, OrderedDict[str, Acquire]] = OrderedDict()
        self._group_of: dict[str, str] = {}  # waiting job -> its request's place
        self._max_queue = max_queue
        self._rejected = 0
        self._mean_job_s: float | None = None
        self._changed = trio.Event()

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            slots_total=len(self._owners),
            slots_busy=sum(owner is not None for owner in self._owners),
            queue_depth=len(self._queue),
            max_queue=self._max_queue,
            slot_jobs=tuple(self._owners),
            queued_jobs=tuple(job for jobs in self._queue.values() for job in jobs),
            rejected_total=self._rejected,
            mean_job_s=self._mean_job_s,
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
        job_id = command.job_id
        if job_id in self._group_of or job_id in self._owners:
            log.warning("job %s asked for a second slot; refused", job_id)
            self._reply(job_id, command.reply, self._full())
            return
        if not self._queue and self._can_start(command):
            self._grant(command)
            return
        group = command.group or job_id
        waiting = self._queue.get(group)
        if waiting is None:  # a request of its own, or its first choice to wait
            if len(self._queue) >= self._max_queue:
                self._rejected += 1
                self._reply(job_id, command.reply, self._full())
                return
            position = len(self._queue)
        else:  # the request already holds its place
            position = list(self._queue).index(group)
        if self._reply(job_id, command.reply, Queued(position)):
            self._queue.setdefault(group, OrderedDict())[job_id] = command
            self._group_of[job_id] = group

    def _can_start(self, command: Acquire) -> bool:
        """A slot is free and, from a shared pool, the job's cells fit beside the rest."""
        return None in self._owners and fits(sum(self._reserved), command.cells, self._pool)

    def _full(self) -> QueueFull:
        return QueueFull(len(self._queue), self.statistics().retry_after())

    def _grant(self, command: Acquire) -> bool:
        slot = self._choose(command.prompt_tokens)
        if not self._reply(command.job_id, command.reply, Granted(slot)):
            return False
        self._owners[slot] = command.job_id
        self._granted_at[slot] = trio.current_time()
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
        group = self._group_of.pop(command.job_id, None)
        if group is not None:
            waiting = self._queue[group]
            del waiting[command.job_id]
            if not waiting:
                del self._queue[group]
            return
        if command.job_id in self._owners:
            slot = self._owners.index(command.job_id)
            self._owners[slot] = None
            self._reserved[slot] = 0
            self._note_job_time(trio.current_time() - self._granted_at[slot])
            self._grant_waiting()

    def _note_job_time(self, seconds: float) -> None:
        mean = self._mean_job_s
        self._mean_job_s = seconds if mean is None else mean + MEAN_WEIGHT * (seconds - mean)

    def _grant_waiting(self) -> None:
        """Grants the head of the queue while it can start (a freed slot, or freed cells
        letting several jobs in at once); a head that cannot start waits, and so does
        everyone behind it. A head whose session is gone is skipped."""
        while self._queue:
            group, waiting = next(iter(self._queue.items()))
            head = next(iter(waiting.values()))
            if not self._can_start(head):
                return
            del waiting[head.job_id]
            del self._group_of[head.job_id]
            if waiting:
                self._queue.move_to_end(group)  # its other choices wait for their next turn
            else:
                del self._queue[group]
            self._grant(head)

    def _reply(self, job_id: str, channel: _Reply, reply: SlotReply) -> bool:
        self.trace(f"session:{job_id}", reply)
        return _send_nowait(channel, reply)


def _send_nowait(channel: trio.MemorySendChannel[SlotReply], reply: SlotReply) -> bool:
    try:
        channel.send_nowait(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        return False
    return True

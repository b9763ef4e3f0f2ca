"""SlotScheduler: N slots, the KV cells they share, and a queue of requests in front of them,
bounded by how long a request would wait there and by a count."""

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
# Weight of the newest job in the recent mean job length (an exponentially weighted mean),
# what a job without a client's limit is expected to generate.
MEAN_WEIGHT = 0.3
# The length expected of a job without a limit before any job has ended.
TYPICAL_TOKENS = 256

# Slot-seconds per generated token while busy (TokenPace, via the model's statistics); None
# while unknown, and then only the count bounds the queue.
Pace = Callable[[], float | None]

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
    # The shared KV pool (None: each slot owns its cells) and what running requests reserved.
    pool_cells: int | None = None
    cells_reserved: int = 0
    # How long a request arriving now would wait for a slot, and the most it may (None:
    # unknown, or no bound); what a refusal's Retry-After says.
    wait_s: float | None = None
    max_wait_s: float | None = None
    retry_after: int = 1

    def full(self) -> bool:
        """A request arriving now would be refused (the routes' early answer)."""
        if self.slots_busy < self.slots_total:
            return False
        if self.queue_depth >= self.max_queue:
            return True
        wait, most = self.wait_s, self.max_wait_s
        return wait is not None and most is not None and wait > most


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

    Admission: a request that must wait gets a place while the queue holds fewer than
    `max_queue` requests (a bound for memory) and its wait for a slot would be at most
    `max_wait_s`. The wait is the work ahead of it in tokens (what the running jobs have
    left and the queued jobs' limits; a job without a client's limit counts as the recent
    mean length) times the pace (slot-seconds per token, measured by the engine's steps and
    seeded by its warm-up), over the slots. A refused request's Retry-After is when that
    work has shrunk enough to let it in, and never sooner than the next slot frees.
    """

    def __init__(
        self,
        n_slots: int,
        max_queue: int,
        *,
        tracer: Tracer = no_trace,
        chooser: SlotChooser = first_free,
        pool: int | None = None,
        max_wait_s: float | None = None,
        pace: Pace = lambda: None,
    ) -> None:
        self.trace = tracer
        self._chooser = chooser
        self._owners: list[str | None] = [None] * n_slots
        self._granted_at: list[float] = [0.0] * n_slots
        self._pool = pool
        self._reserved = [0] * n_slots  # cells reserved by each slot's job
        self._expected = [0] * n_slots  # tokens each slot's job is expected to generate
        # Waiting requests in turn order, each with its waiting jobs in order.
        self._queue: OrderedDict[str, OrderedDict[str, Acquire]] = OrderedDict()
        self._group_of: dict[str, str] = {}  # waiting job -> its request's place
        self._max_queue = max_queue
        self._max_wait_s = max_wait_s
        self._pace = pace
        self._rejected = 0
        self._mean_tokens = float(TYPICAL_TOKENS)
        self._changed = trio.Event()

    def statistics(self) -> SchedulerStatistics:
        wait = self._wait_s()
        return SchedulerStatistics(
            slots_total=len(self._owners),
            slots_busy=sum(owner is not None for owner in self._owners),
            queue_depth=len(self._queue),
            max_queue=self._max_queue,
            slot_jobs=tuple(self._owners),
            queued_jobs=tuple(job for jobs in self._queue.values() for job in jobs),
            rejected_total=self._rejected,
            pool_cells=self._pool,
            cells_reserved=sum(self._reserved),
            wait_s=wait,
            max_wait_s=self._max_wait_s,
            retry_after=self._retry_after(wait),
        )

    def _expect(self, command: Acquire) -> int:
        """Tokens a job is expected to generate: its limit, or the recent mean without one."""
        if command.budget is not None:
            return command.budget
        return max(1, round(self._mean_tokens))

    def _left(self, pace: float) -> list[float]:
        """Tokens each busy slot's job has left, from its expectation and its time so far."""
        now = trio.current_time()
        return [
            max(0.0, expected - (now - granted) / pace)
            for owner, expected, granted in zip(
                self._owners, self._expected, self._granted_at, strict=True
            )
            if owner is not None
        ]

    def _pace_s(self) -> float | None:
        """The pace, or None while unknown; steps that take no time (the fake engine in
        virtual time) give no pace to divide by."""
        pace = self._pace()
        return pace if pace is not None and pace > 0 else None

    def _wait_s(self) -> float | None:
        """Seconds a job joining the queue now would wait for a slot; None while the pace is
        unknown. Zero while a slot is free."""
        pace = self._pace_s()
        if pace is None:
            return None
        left = self._left(pace)
        if len(left) < len(self._owners):
            return 0.0
        queued = sum(self._expect(job) for jobs in self._queue.values() for job in jobs.values())
        return (sum(left) + queued) * pace / len(self._owners)

    def _retry_after(self, wait: float | None) -> int:
        """Seconds until a refused request is likely to get in: until the work ahead has
        shrunk to `max_wait_s`, and no sooner than the next slot frees; at least 1."""
        pace = self._pace_s()
        if wait is None or pace is None:
            return 1
        left = self._left(pace)
        next_free = min(left) * pace if len(left) == len(self._owners) else 0.0
        excess = wait - self._max_wait_s if self._max_wait_s is not None else 0.0
        return max(1, math.ceil(max(next_free, excess)))

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
            if self._refuses():
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

    def _refuses(self) -> bool:
        """No place for a new request: the queue is at its count, or too long a wait."""
        if len(self._queue) >= self._max_queue:
            return True
        wait = self._wait_s()
        return wait is not None and self._max_wait_s is not None and wait > self._max_wait_s

    def _full(self) -> QueueFull:
        return QueueFull(len(self._queue), self._retry_after(self._wait_s()))

    def _grant(self, command: Acquire) -> bool:
        slot = self._choose(command.prompt_tokens)
        if not self._reply(command.job_id, command.reply, Granted(slot)):
            return False
        self._owners[slot] = command.job_id
        self._granted_at[slot] = trio.current_time()
        self._reserved[slot] = command.cells
        self._expected[slot] = self._expect(command)
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
            self._expected[slot] = 0
            self._mean_tokens += MEAN_WEIGHT * (command.tokens_out - self._mean_tokens)
            self._grant_waiting()

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

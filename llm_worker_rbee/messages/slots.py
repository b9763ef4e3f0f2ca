"""InferenceSession <-> SlotScheduler: ask for a slot, wait in line, leave."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio


@dataclass(frozen=True, slots=True)
class Queued:
    """No slot is free; the request waits in line at `position` (0 = next)."""

    position: int


@dataclass(frozen=True, slots=True)
class Granted:
    slot: int


@dataclass(frozen=True, slots=True)
class QueueFull:
    queue_depth: int
    # Seconds until a place is likely free: what the 503's Retry-After says.
    retry_after: int = 1


SlotReply = Queued | Granted | QueueFull


@dataclass(frozen=True, slots=True)
class Acquire:
    """Ask for a slot. The answer (Granted, or Queued then Granted, or QueueFull) goes to reply.

    `reply` needs a buffer of 2 so the scheduler never blocks on it. `prompt_tokens` lets
    the scheduler pick the free slot whose prompt cache matches best. `cells`: the KV cells
    the request reserves (prompt + completion limit) when the slots share one pool
    (engine/cells.py).
    """

    job_id: str
    reply: trio.MemorySendChannel[SlotReply] = field(compare=False)
    prompt_tokens: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # The request this job is a choice of (its job id); None: a request of its own. A
    # request's waiting choices share one place in the queue.
    group: str | None = field(default=None, compare=False)
    cells: int = field(default=0, compare=False)
    # The tokens the job may generate, for the queue's wait estimate; None: no limit of the
    # client's (what fits the context), so the scheduler expects a typical job's length.
    budget: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Leave:
    """The request is done: free its slot if it holds one, else take it out of the queue.
    `tokens_out`: what it generated, which teaches the scheduler a typical job's length."""

    job_id: str
    tokens_out: int = 0


SchedulerCommand = Acquire | Leave

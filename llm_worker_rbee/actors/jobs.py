"""JobBoard: jobs posted in one call and streamed in another (rbee's two-call job API).

A job is admitted when it is posted (`POST /v1/jobs`, or rbee's queen on `/v1/inference`):
its session runs at once and its events wait, bounded (its mailbox merges the text, and a
session has at most three other events), until one reader opens
`GET .../{job_id}/stream`. From then on the reader's request owns the job (a reader that
leaves cancels it). A job nobody claims within the pickup timeout is cancelled and its slot
freed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import trio

from llm_worker_rbee.actors.choice_stream import ChoiceStream

log = logging.getLogger(__name__)

# What became of a job that is no longer waiting for its reader.
Gone = Literal["claimed", "expired"]


@dataclass
class PostedJob:
    job_id: str
    stream: ChoiceStream
    model: str
    posted_at: float  # wall clock (Unix seconds), for the `started` event
    _expiry: trio.CancelScope


@dataclass(frozen=True, slots=True)
class JobBoardStatistics:
    waiting: int  # posted, not yet claimed
    expired_total: int


class JobClaimError(Exception):
    """The job cannot be streamed: `reason` is `unknown`, `claimed` or `expired`."""

    def __init__(self, job_id: str, reason: Literal["unknown"] | Gone) -> None:
        super().__init__(f"job {job_id!r}: {reason}")
        self.job_id = job_id
        self.reason = reason


class JobBoard:
    """Posted jobs waiting for their one reader; see the module docstring."""

    def __init__(self, pickup_timeout: float, *, remember: int = 10_000) -> None:
        self._pickup_timeout = pickup_timeout
        self._waiting: dict[str, PostedJob] = {}
        # Recently claimed or expired ids, so a second reader learns why it is refused.
        self._gone: OrderedDict[str, Gone] = OrderedDict()
        self._remember = remember
        self._expired_total = 0
        self._nursery: trio.Nursery | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[JobBoard] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                for job in list(self._waiting.values()):
                    job.stream.close()

    def post(self, job_id: str, stream: ChoiceStream, *, model: str, posted_at: float) -> None:
        """Keeps a running job until its reader claims it or the pickup timeout passes.

        Raises:
            ValueError: a job of that id is already waiting.
        """
        if self._nursery is None:
            raise RuntimeError("the job board is not running")
        if job_id in self._waiting:  # the routes refuse a taken id first (409)
            raise ValueError(f"job {job_id!r} is already waiting for its reader")
        job = PostedJob(job_id, stream, model, posted_at, trio.CancelScope())
        self._waiting[job_id] = job
        self._nursery.start_soon(self._expire, job)

    def claim(self, job_id: str) -> PostedJob:
        """Hands the job to its one reader, who owns it from now on.

        Raises:
            JobClaimError: never posted (or long forgotten), already claimed, or expired.
        """
        job = self._waiting.pop(job_id, None)
        if job is None:
            raise JobClaimError(job_id, self._gone.get(job_id, "unknown"))
        job._expiry.cancel()
        self._forget(job_id, "claimed")
        return job

    def knows(self, job_id: str) -> bool:
        """The id names a job waiting for its reader, or one claimed or expired lately."""
        return job_id in self._waiting or job_id in self._gone

    def statistics(self) -> JobBoardStatistics:
        return JobBoardStatistics(len(self._waiting), self._expired_total)

    async def _expire(self, job: PostedJob) -> None:
        with job._expiry:
            await trio.sleep(self._pickup_timeout)
            if self._waiting.get(job.job_id) is job:  # only its own job, never a namesake
                del self._waiting[job.job_id]
                log.warning(
                    "job %s: nobody opened its stream within %g s; cancelled",
                    job.job_id,
                    self._pickup_timeout,
                )
                self._expired_total += 1
                self._forget(job.job_id, "expired")
                job.stream.close()

    def _forget(self, job_id: str, why: Gone) -> None:
        self._gone[job_id] = why
        while len(self._gone) > self._remember:
            self._gone.popitem(last=False)

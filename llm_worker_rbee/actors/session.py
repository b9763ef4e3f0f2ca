"""InferenceSession: one request from slot to last byte; SessionPool: the nursery they run in."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import trio

from llm_worker_rbee.actors.choice_stream import ChoiceBox, ChoiceStream
from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.actors.scheduler import SchedulerHandle
from llm_worker_rbee.logs import current_job
from llm_worker_rbee.messages.errors import ENGINE_ERROR, OUT_OF_MEMORY, TIMEOUT_ERROR, overloaded
from llm_worker_rbee.messages.inference import (
    Admit,
    Cancel,
    FinishReason,
    SequenceEnd,
    SequenceFinished,
)
from llm_worker_rbee.messages.session import (
    Accepted,
    Ended,
    ErrorInfo,
    InferenceRequest,
    Rejected,
    SessionEvent,
    Started,
    StopReason,
)
from llm_worker_rbee.messages.slots import Acquire, Granted, Leave, Queued, QueueFull, SlotReply
from llm_worker_rbee.tracing import Tracer, no_trace

log = logging.getLogger(__name__)

# Cleanup messages go to actors whose inboxes drain in microseconds; the deadline only guards
# against a wedged actor.
CLEANUP_DEADLINE_S = 2.0
STOP_REASONS: dict[FinishReason, StopReason] = {
    "eos": "eos",
    "length": "max_tokens",
    "stop": "stop_sequence",
}


class InferenceSession:
    """Runs one request's control path: waits for a slot, admits the sequence, waits for its
    end (or a cancel or the deadline), gives the slot back. Its text goes from the engine to
    the reader through the choice's mailbox, not through this task.

    Always ends with exactly one terminal event (Rejected or Ended), and always gives back
    what it took (slot, sequence) in `finally`.
    """

    def __init__(
        self,
        request: InferenceRequest,
        model: ModelHandle,
        scheduler: SchedulerHandle,
        tracer: Tracer = no_trace,
        *,
        index: int = 0,
        group: str | None = None,
        after: trio.Event | None = None,
    ) -> None:
        self.request = request
        self.index = index  # the choice this session answers
        self._group = group  # the request's job id when it has several choices
        # A request's choices ask for slots in index order: each waits until the one
        # before it has asked, so the first wave is choices 0, 1, 2, ...
        self._after = after
        self.asked = trio.Event()
        self._model = model
        self._scheduler = scheduler
        self._trace = tracer
        # The request's deadline (queue time included) is this scope's deadline.
        deadline = math.inf if request.deadline is None else request.deadline
        self._scope = trio.CancelScope(deadline=deadline)
        self._aborted = False
        self._abort_reason: StopReason = "cancelled"
        self._seq: int | None = None
        self._tokens_out = 0
        self._cached_tokens = 0
        self._started_at: float | None = None
        self._released = False
        self.final: SessionEvent | None = None  # the terminal event, once decided
        self.done = trio.Event()
        # False once the request was refused before its answer started: its job id is free.
        self.remembered = True

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def abort(self, reason: StopReason = "cancelled") -> None:
        """Stop this request as soon as possible; it still sends its final event."""
        if not self._aborted:
            self._aborted = True
            self._abort_reason = reason
            self._scope.cancel()

    async def run(self, box: ChoiceBox) -> None:
        current_job.set(self.job_id)  # this task's log lines name the job
        try:
            final: SessionEvent | None = None
            with self._scope:
                try:
                    final = await self._serve(box)
                except trio.ClosedResourceError:
                    self.abort("cancelled")  # the reader is gone: same as a disconnect
            # No text after this: the end counts what the reader gets.
            box.mailbox.seal()
            self._tokens_out = box.mailbox.tokens_put
            if final is None and self._aborted:
                final = self._ended(self._abort_reason)
            elif final is None:
                final = self._ended("timeout", TIMEOUT_ERROR)
            # Give the slot back before telling the client: a client that sends its next
            # request on seeing the end finds the slot free (the inboxes are FIFO).
            await self._release()
            self.final = final
            box.finish(final)
        finally:
            self.asked.set()
            if self.final is None:
                box.abandon()
            await self._release()
            self.done.set()

    def _ended(
        self, reason: StopReason, error: ErrorInfo | None = None, *, stop: str | None = None
    ) -> Ended:
        decode_s = 0.0 if self._started_at is None else trio.current_time() - self._started_at
        return Ended(
            stop_reason=reason,
            tokens_in=len(self.request.prompt_tokens),
            tokens_out=self._tokens_out,
            decode_ms=round(decode_s * 1000),
            error=error,
            cached_tokens=self._cached_tokens,
            stop=stop,
        )

    async def _serve(self, box: ChoiceBox) -> SessionEvent:
        request = self.request
        reply_send, reply_recv = trio.open_memory_channel[SlotReply](2)
        async with reply_recv:
            if self._after is not None:
                await self._after.wait()
            await self._scheduler.send(
                Acquire(
                    request.job_id,
                    reply_send,
                    prompt_tokens=request.prompt_tokens,
                    group=self._group,
                    cells=len(request.prompt_tokens) + request.max_tokens,
                    budget=request.max_tokens if request.limit_asked else None,
                )
            )
            self.asked.set()
            reply = await reply_recv.receive()
            if isinstance(reply, QueueFull):
                return Rejected(overloaded(reply.queue_depth, reply.retry_after))
            position = reply.position if isinstance(reply, Queued) else None
            box.emit(Accepted(request.job_id, position))
            while not isinstance(reply, Granted):
                reply = await reply_recv.receive()
        return await self._generate(reply.slot, box)

    async def _generate(self, slot: int, box: ChoiceBox) -> Ended:
        request = self.request
        mailbox = box.mailbox
        self._seq = slot
        self._started_at = trio.current_time()
        await self._model.send(
            Admit(
                seq_id=slot,
                job_id=request.job_id,
                prompt_tokens=request.prompt_tokens,
                sampling=request.sampling,
                max_tokens=request.max_tokens,
                mailbox=mailbox,
                stop=request.stop,
                thinking=request.thinking,
            )
        )
        box.emit(Started(request.job_id, slot, len(request.prompt_tokens)))
        # Woken once, at the end: the text goes from the mailbox to the reader directly.
        end = await mailbox.ended()
        self._seq = None  # the sequence already left the engine
        self._tokens_out = mailbox.tokens_put
        self._cached_tokens = mailbox.cached_tokens
        return self._ending(end)

    def _ending(self, end: SequenceEnd) -> Ended:
        """The sequence ended in the engine (its slot's sequence is already gone)."""
        if isinstance(end, SequenceFinished):
            return self._ended(STOP_REASONS[end.reason], stop=end.stop)
        log.error("job %s failed in the engine: %s", self.request.job_id, end.message)
        return self._ended("error", OUT_OF_MEMORY if end.out_of_memory else ENGINE_ERROR)

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        with (
            trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_DEADLINE_S),
            # An actor that has stopped (the worker is going down) holds nothing to give back.
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            if self._seq is not None:
                await self._model.send(Cancel(self._seq))
                self._seq = None
            await self._scheduler.send(Leave(self.request.job_id, self._tokens_out))


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    live: int
    requests_total: int  # sessions started (each choice of an n > 1 request is one)
    last_error: ErrorInfo | None  # the last server-side failure, if any
    last_error_at: float | None  # in trio's clock
    failing: bool  # the last request that ended in the engine failed there


class SessionPool:
    """Owns the nursery every InferenceSession runs in, and knows which are alive."""

    def __init__(
        self,
        model: ModelHandle,
        scheduler: SchedulerHandle,
        *,
        tracer: Tracer = no_trace,
        remember: int = 10_000,
    ) -> None:
        self._model = model
        self._scheduler = scheduler
        self._trace = tracer
        self._nursery: trio.Nursery | None = None
        self._live: dict[str, InferenceSession] = {}
        # Recently ended job ids: a late cancel still gets 204 rather than 404, and a new
        # request may not take one (job ids stay unique while the worker remembers them).
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._changed = trio.Event()
        self._requests_total = 0
        self._last_error: tuple[ErrorInfo, float] | None = None
        self._failing = False

    async def run(
        self, *, task_status: trio.TaskStatus[SessionPool] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    def start(self, request: InferenceRequest) -> ChoiceStream:
        return self.start_choices([request])

    def start_choices(self, requests: list[InferenceRequest]) -> ChoiceStream:
        """Starts one session per choice; their events arrive as (choice index, event)."""
        if self._nursery is None:
            raise RuntimeError("the session pool is not running")
        doorbell = trio.lowlevel.ParkingLot()  # one reader wakes for every choice
        boxes: list[ChoiceBox] = []
        sessions: list[InferenceSession] = []
        # Choices beyond the free slots wait in the scheduler's queue as one request.
        group = requests[0].job_id if len(requests) > 1 else None
        for index, request in enumerate(requests):
            session = InferenceSession(
                request,
                self._model,
                self._scheduler,
                self._trace,
                index=index,
                group=group,
                after=sessions[-1].asked if sessions else None,
            )
            box = ChoiceBox(index, request.job_id, OutputMailbox(doorbell), self._trace)
            self._live[request.job_id] = session
            self._requests_total += 1
            sessions.append(session)
            boxes.append(box)
            self._nursery.start_soon(self._run, session, box)
        return ChoiceStream(boxes, sessions, doorbell)

    async def _run(self, session: InferenceSession, box: ChoiceBox) -> None:
        try:
            await session.run(box)
        finally:
            self._live.pop(session.job_id, None)
            self._note_outcome(session.final)
            if session.remembered and not isinstance(session.final, Rejected):
                self._ended[session.job_id] = None
                while len(self._ended) > self._remember:
                    self._ended.popitem(last=False)
            self._changed.set()
            self._changed = trio.Event()

    def get(self, job_id: str) -> InferenceSession | None:
        return self._live.get(job_id)

    def knows(self, job_id: str) -> bool:
        """The id names a live session or one that ended lately (the last `remember`)."""
        return job_id in self._live or job_id in self._ended

    def refuse(self, stream: ChoiceStream) -> None:
        """The request was refused before its answer started (queue full, a deadline passed
        while it waited to be accepted): its sessions stop and their job ids are free."""
        for session in stream.sessions:
            session.remembered = False
            self._ended.pop(session.job_id, None)
        stream.close()

    def cancel(self, job_id: str) -> bool:
        """Cancels a running or queued job. True if the job is known (live or recently ended)."""
        # A request with several choices runs `job`, `job.1`, `job.2`...: cancel them all.
        prefix = job_id + "."
        found = [s for key, s in self._live.items() if key == job_id or key.startswith(prefix)]
        for session in found:
            session.abort("cancelled")
        return bool(found) or job_id in self._ended

    @property
    def live(self) -> int:
        return len(self._live)

    def statistics(self) -> PoolStatistics:
        error, at = self._last_error or (None, None)
        return PoolStatistics(self.live, self._requests_total, error, at, self._failing)

    def _note_outcome(self, final: SessionEvent | None) -> None:
        """Remembers server-side failures (5xx other than overload) for the heartbeat."""
        if not isinstance(final, Ended):
            return
        error = final.error
        if error == OUT_OF_MEMORY:  # degraded only once it repeats (ModelStatistics)
            self._last_error = (error, trio.current_time())
        elif error is not None and error.status >= 500 and error.status != 503:
            self._last_error = (error, trio.current_time())
            self._failing = True
        elif final.stop_reason in ("eos", "max_tokens", "stop_sequence"):
            self._failing = False

    def abort_all(self, reason: StopReason) -> None:
        for session in list(self._live.values()):
            session.abort(reason)

    async def wait_empty(self) -> None:
        while self._live:
            await self._changed.wait()

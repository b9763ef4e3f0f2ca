"""InferenceSession: one request from slot to last byte; SessionPool: the nursery they run in."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import trio

from llm_worker_rbee.actors.model import ModelHandle
from llm_worker_rbee.actors.scheduler import SchedulerHandle
from llm_worker_rbee.actors.text import PieceDecoder, StopMatcher
from llm_worker_rbee.messages.inference import (
    Admit,
    Cancel,
    SequenceEvent,
    SequenceFailed,
    SequenceFinished,
    TokenGenerated,
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
    TextDelta,
)
from llm_worker_rbee.messages.slots import Acquire, Granted, Leave, Queued, QueueFull, SlotReply

log = logging.getLogger(__name__)

# Cleanup messages go to actors whose inboxes drain in microseconds; the deadline only guards
# against a wedged actor.
CLEANUP_DEADLINE_S = 2.0
OUT_BUFFER = 16


class InferenceSession:
    """Runs one request: waits for a slot, admits the sequence, turns tokens into text.

    Always ends with exactly one terminal event (Rejected or Ended) unless the reader is gone,
    and always gives back what it took (slot, sequence) in `finally`.
    """

    def __init__(
        self, request: InferenceRequest, model: ModelHandle, scheduler: SchedulerHandle
    ) -> None:
        self.request = request
        self._model = model
        self._scheduler = scheduler
        self._scope = trio.CancelScope()
        self._abort_reason: StopReason = "cancelled"
        self._seq: int | None = None
        self._tokens_out = 0
        self._started_at: float | None = None
        self._released = False
        self.done = trio.Event()

    @property
    def job_id(self) -> str:
        return self.request.job_id

    def abort(self, reason: StopReason = "cancelled") -> None:
        """Stop this request as soon as possible; it still sends its final event."""
        if not self._scope.cancel_called:
            self._abort_reason = reason
            self._scope.cancel()

    async def run(self, out: trio.MemorySendChannel[SessionEvent]) -> None:
        async with out:
            try:
                final: SessionEvent | None = None
                with self._scope:
                    final = await self._serve(out)
                if final is None:
                    final = self._ended(self._abort_reason)
                # Give the slot back before telling the client: a client that sends its next
                # request on seeing the end finds the slot free (the inboxes are FIFO).
                await self._release()
                await _send_final(out, final)
            finally:
                await self._release()
                self.done.set()

    def _ended(self, reason: StopReason, error: ErrorInfo | None = None) -> Ended:
        decode_s = 0.0 if self._started_at is None else trio.current_time() - self._started_at
        return Ended(
            stop_reason=reason,
            tokens_in=len(self.request.prompt_tokens),
            tokens_out=self._tokens_out,
            decode_ms=round(decode_s * 1000),
            error=error,
        )

    async def _serve(self, out: trio.MemorySendChannel[SessionEvent]) -> SessionEvent:
        request = self.request
        reply_send, reply_recv = trio.open_memory_channel[SlotReply](2)
        async with reply_recv:
            await self._scheduler.send(Acquire(request.job_id, reply_send))
            reply = await reply_recv.receive()
            if isinstance(reply, QueueFull):
                return Rejected(
                    ErrorInfo(
                        status=503,
                        type="overloaded",
                        code="all_slots_busy",
                        message=f"all slots are busy and {reply.queue_depth} requests wait",
                    )
                )
            position = reply.position if isinstance(reply, Queued) else None
            await out.send(Accepted(request.job_id, position))
            while not isinstance(reply, Granted):
                reply = await reply_recv.receive()
        return await self._generate(reply.slot, out)

    async def _generate(self, slot: int, out: trio.MemorySendChannel[SessionEvent]) -> Ended:
        request = self.request
        events_send, events_recv = trio.open_memory_channel[SequenceEvent](request.max_tokens + 4)
        async with events_recv:
            self._seq = slot
            self._started_at = trio.current_time()
            await self._model.send(
                Admit(
                    seq_id=slot,
                    job_id=request.job_id,
                    prompt_tokens=request.prompt_tokens,
                    sampling=request.sampling,
                    max_tokens=request.max_tokens,
                    events=events_send,
                )
            )
            await out.send(Started(request.job_id, slot, len(request.prompt_tokens)))
            decoder = PieceDecoder()
            stops = StopMatcher(request.stop)
            pending_tokens = 0
            async for event in events_recv:
                if isinstance(event, TokenGenerated):
                    self._tokens_out += 1
                    pending_tokens += 1
                    text = stops.feed(decoder.feed(event.piece))
                    if stops.matched is not None:
                        await _send_delta(out, text, pending_tokens)
                        return self._ended("stop_sequence")
                    if await _send_delta(out, text, pending_tokens):
                        pending_tokens = 0
                elif isinstance(event, SequenceFinished):
                    self._seq = None
                    text = stops.feed(decoder.flush())
                    if stops.matched is None:
                        text += stops.flush()
                    await _send_delta(out, text, pending_tokens)
                    if stops.matched is not None:
                        return self._ended("stop_sequence")
                    return self._ended("eos" if event.reason == "eos" else "max_tokens")
                elif isinstance(event, SequenceFailed):
                    self._seq = None
                    log.error("job %s failed in the engine: %s", request.job_id, event.message)
                    error = ErrorInfo(500, "server_error", "engine_error", "generation failed")
                    return self._ended("error", error)
        raise AssertionError("the model actor closed a sequence without a terminal event")

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_DEADLINE_S):
            if self._seq is not None:
                await self._model.send(Cancel(self._seq))
                self._seq = None
            await self._scheduler.send(Leave(self.request.job_id))


async def _send_delta(out: trio.MemorySendChannel[SessionEvent], text: str, tokens: int) -> bool:
    if not text:
        return False
    await out.send(TextDelta(text, tokens))
    return True


async def _send_final(out: trio.MemorySendChannel[SessionEvent], event: SessionEvent) -> None:
    """The terminal event goes out even while the worker is being cancelled, briefly."""
    # A reader that is gone has nobody to tell.
    with (
        trio.CancelScope(shield=True, deadline=trio.current_time() + CLEANUP_DEADLINE_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await out.send(event)


@dataclass
class SessionStream:
    """The HTTP side of a session: its events, and a way to stop it."""

    events: trio.MemoryReceiveChannel[SessionEvent]
    session: InferenceSession = field(repr=False)
    # The first event, which the HTTP handler reads before choosing a status.
    accepted: Accepted | None = None

    def close(self) -> None:
        """Synchronous on purpose: it runs in cancelled contexts (client disconnects)."""
        self.session.abort("cancelled")
        self.events.close()


class SessionPool:
    """Owns the nursery every InferenceSession runs in, and knows which are alive."""

    def __init__(self, model: ModelHandle, scheduler: SchedulerHandle) -> None:
        self._model = model
        self._scheduler = scheduler
        self._nursery: trio.Nursery | None = None
        self._live: dict[str, InferenceSession] = {}
        self._changed = trio.Event()

    async def run(
        self, *, task_status: trio.TaskStatus[SessionPool] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    def start(self, request: InferenceRequest) -> SessionStream:
        if self._nursery is None:
            raise RuntimeError("the session pool is not running")
        send, receive = trio.open_memory_channel[SessionEvent](OUT_BUFFER)
        session = InferenceSession(request, self._model, self._scheduler)
        self._live[request.job_id] = session
        self._nursery.start_soon(self._run, session, send)
        return SessionStream(receive, session)

    async def _run(
        self, session: InferenceSession, out: trio.MemorySendChannel[SessionEvent]
    ) -> None:
        try:
            await session.run(out)
        finally:
            self._live.pop(session.job_id, None)
            self._changed.set()
            self._changed = trio.Event()

    def get(self, job_id: str) -> InferenceSession | None:
        return self._live.get(job_id)

    @property
    def live(self) -> int:
        return len(self._live)

    def abort_all(self, reason: StopReason) -> None:
        for session in list(self._live.values()):
            session.abort(reason)

    async def wait_empty(self) -> None:
        while self._live:
            await self._changed.wait()

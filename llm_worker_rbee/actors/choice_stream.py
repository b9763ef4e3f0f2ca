"""ChoiceStream: the events of one request's sessions (OpenAI `n`, or a list of prompts),
merged and tagged with the choice index, as the HTTP handler reads them.

The text does not pass through the sessions: the response reads each choice's mailbox
itself, woken once per engine step by the mailbox's `put` (one doorbell for the request's
choices). A session sends only its control events (Accepted, Started, and the terminal
Rejected or Ended) into its choice's ChoiceBox, and the box orders them around the text:
text only after Started, the terminal event only after the last text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import trio

from llm_worker_rbee.actors.mailbox import OutputMailbox
from llm_worker_rbee.messages.inference import TextOutput
from llm_worker_rbee.messages.session import Accepted, SessionEvent, Started, StopReason, TextDelta
from llm_worker_rbee.tracing import Tracer, no_trace


class Choice(Protocol):
    """What the stream and the pool need of a choice's session (an InferenceSession), so
    this module does not import the one that makes them."""

    remembered: bool

    @property
    def job_id(self) -> str: ...

    def abort(self, reason: StopReason = "cancelled") -> None: ...


def _shows(output: TextOutput) -> bool:
    """A delta goes out for text, and at the end for tokens that bring only logprobs."""
    return bool(output.text) or (output.end is not None and bool(output.logprobs))


@dataclass(eq=False)
class ChoiceBox:
    """One choice's events, in the order its reader reads them: the session's control
    events, the engine's text (merged in `mailbox` while the reader lags), the terminal
    event. Trio thread only."""

    index: int
    job_id: str
    mailbox: OutputMailbox
    trace: Tracer = no_trace
    _control: deque[SessionEvent] = field(default_factory=deque)
    _final: SessionEvent | None = None
    _started = False  # the reader has read Started: text may follow
    _done = False  # the reader has read the terminal event
    _abandoned = False  # the session ended without one (cancelled from outside)
    _final_traced = False

    def emit(self, event: SessionEvent) -> None:
        """Session side: Accepted or Started."""
        self.trace(f"http:{self.job_id}", event)
        self._control.append(event)
        self.mailbox.wake()

    def finish(self, final: SessionEvent) -> None:
        """Session side: the terminal event, read after every text already taken in."""
        self.mailbox.seal()
        self._final = final
        if self.mailbox.closed:  # nobody will read it: trace it now
            self._trace_final()
        self.mailbox.wake()

    def abandon(self) -> None:
        """Session side: it ends without a terminal event; the reader's stream ends."""
        self.mailbox.seal()
        self._abandoned = True
        self.mailbox.wake()

    def _due(self) -> Literal["control", "text", "final"] | None:
        """What `next` reads now, if anything: one rule for `ready` and `next`."""
        if self._done:
            return None
        if self._control:
            return "control"
        pending = self.mailbox.peek()
        if self._started and pending is not None and _shows(pending):
            return "text"
        return None if self._final is None else "final"

    def ready(self) -> bool:
        """`next` would return an event."""
        return self._due() is not None

    def next(self) -> SessionEvent | None:
        """Reader side: the next event, or None when there is none yet."""
        due = self._due()
        if due == "control":
            event = self._control.popleft()
            self._started = self._started or isinstance(event, Started)
            return event
        if due == "text":
            output = self.mailbox.take()
            assert output is not None
            delta = TextDelta(output.text, output.tokens, output.logprobs)
            self.trace(f"http:{self.job_id}", delta)
            return delta
        if due is None:
            self._done = self._done or self._abandoned
            return None
        self.mailbox.take()  # tokens without text of their own: nothing to show
        self._done = True
        self._trace_final()
        return self._final

    @property
    def done(self) -> bool:
        return self._done

    def close(self) -> None:
        self.mailbox.close()
        if self._final is not None and not self._done:
            self._trace_final()

    def _trace_final(self) -> None:
        # Once, when the reader gets it or is gone: after the text deltas it follows.
        if not self._final_traced and self._final is not None:
            self._final_traced = True
            self.trace(f"http:{self.job_id}", self._final)


@dataclass
class ChoiceStream:
    """Several sessions answering one request (OpenAI `n`, or a list of prompts), their
    events merged and tagged with the choice index. Ends when every session has ended."""

    boxes: Sequence[ChoiceBox]
    sessions: Sequence[Choice] = field(repr=False)
    doorbell: trio.lowlevel.ParkingLot = field(repr=False)
    # Each choice's first event, read by the HTTP handler before it chooses a status.
    accepted: dict[int, Accepted] = field(default_factory=dict)
    # Events of choices already accepted, read while the handler waited for the others (a
    # short choice may end before the last is accepted): the answer reads them first.
    early: deque[tuple[int, SessionEvent]] = field(default_factory=deque)
    _turn: int = 0  # the box looked at first next time: no choice starves the others
    _closed: bool = False

    async def receive(self) -> tuple[int, SessionEvent]:
        """The next (choice index, event), the early ones first.

        Raises:
            trio.EndOfChannel: every session has ended and every event was read.
            trio.ClosedResourceError: the stream was closed.
        """
        if self.early:
            return self.early.popleft()
        return await self.next_event()

    async def next_event(self) -> tuple[int, SessionEvent]:
        """The next event of any choice, leaving `early` alone; waits for one."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the choice stream is closed")
            count = len(self.boxes)
            for offset in range(count):
                box = self.boxes[(self._turn + offset) % count]
                event = box.next()
                if event is not None:
                    self._turn = (box.index + 1) % count
                    return box.index, event
            if all(box.done for box in self.boxes):
                raise trio.EndOfChannel
            await self.doorbell.park()

    # An iterator, not an async generator: a reader that stops early leaves nothing to
    # finalize.
    def __aiter__(self) -> ChoiceStream:
        return self

    async def __anext__(self) -> tuple[int, SessionEvent]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def waiting(self) -> int:
        """Events that can be read without waiting (at least; exactly 0 when none)."""
        return len(self.early) + sum(box.ready() for box in self.boxes)

    def close(self) -> None:
        """Synchronous on purpose: it runs in cancelled contexts (client disconnects)."""
        self._closed = True
        for session in self.sessions:
            session.abort("cancelled")
        for box in self.boxes:
            box.close()

"""ChoiceStream: the events of one request's sessions (OpenAI `n`, or a list of prompts),
merged and tagged with the choice index, as the HTTP handler reads them."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from llm_worker_rbee.messages.session import Accepted, SessionEvent, StopReason


class Choice(Protocol):
    """What the stream and the pool need of a choice's session (an InferenceSession), so
    this module does not import the one that makes them."""

    remembered: bool

    @property
    def job_id(self) -> str: ...

    def abort(self, reason: StopReason = "cancelled") -> None: ...


@dataclass
class ChoiceStream:
    """Several sessions answering one request (OpenAI `n`, or a list of prompts), their
    events merged and tagged with the choice index. Ends when every session has ended."""

    events: trio.MemoryReceiveChannel[tuple[int, SessionEvent]]
    sessions: Sequence[Choice] = field(repr=False)
    # Each choice's first event, read by the HTTP handler before it chooses a status.
    accepted: dict[int, Accepted] = field(default_factory=dict)
    # Events of choices already accepted, read while the handler waited for the others (a
    # short choice may end before the last is accepted): the answer reads them first.
    early: deque[tuple[int, SessionEvent]] = field(default_factory=deque)

    async def receive(self) -> tuple[int, SessionEvent]:
        """The next (choice index, event), the early ones first.

        Raises:
            trio.EndOfChannel: every session has ended and every event was read.
        """
        if self.early:
            return self.early.popleft()
        return await self.events.receive()

    # An iterator, not an async generator: a reader that stops early leaves nothing to
    # finalize (the events channel is closed with the stream).
    def __aiter__(self) -> ChoiceStream:
        return self

    async def __anext__(self) -> tuple[int, SessionEvent]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def waiting(self) -> int:
        """Events that can be read without waiting."""
        return len(self.early) + self.events.statistics().current_buffer_used

    def close(self) -> None:
        """Synchronous on purpose: it runs in cancelled contexts (client disconnects)."""
        for session in self.sessions:
            session.abort("cancelled")
        self.events.close()

"""OutputMailbox: one request's ready text, between the ModelActor's delivery and the
response that reads it (actors/choice_stream.py)."""

from __future__ import annotations

import trio

from llm_worker_rbee.messages.inference import SequenceEnd, TextOutput


class OutputMailbox:
    """One request's ready text: a single slot that merges what arrives while its reader
    lags (vLLM's RequestOutputCollector), so delivery never blocks and nothing is queued
    per token. Trio thread only.

    Two parties wait on it: the response that reads the text (woken by every `put`, through
    `doorbell`, which the choices of one request share) and the session, which waits only
    for the sequence's end (`ended`) to give its slot back.
    """

    def __init__(self, doorbell: trio.lowlevel.ParkingLot | None = None) -> None:
        self._pending: TextOutput | None = None
        self._closed = False  # the reader is gone
        self._sealed = False  # the session is done: no more text
        self._lot = trio.lowlevel.ParkingLot() if doorbell is None else doorbell
        self._end_lot = trio.lowlevel.ParkingLot()
        self.end: SequenceEnd | None = None
        self.tokens_put = 0  # every token whose text was taken in: what the reader gets
        self.cached_tokens = 0

    def put(self, output: TextOutput) -> bool:
        """Adds `output` (merged with what waits); False once the reader has closed it or
        the session has sealed it."""
        if self._closed or self._sealed:
            return False
        self._pending = output if self._pending is None else self._pending.merged(output)
        self.tokens_put += output.tokens
        self.cached_tokens = output.cached_tokens
        if output.end is not None:
            self.end = output.end
            self._end_lot.unpark_all()
        self._lot.unpark_all()
        return True

    def peek(self) -> TextOutput | None:
        return self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def wake(self) -> None:
        """Wakes the reader for something else it reads (its session's control events)."""
        self._lot.unpark_all()

    def take(self) -> TextOutput | None:
        """Everything that arrived since the last take, without waiting."""
        output, self._pending = self._pending, None
        return output

    async def get(self) -> TextOutput:
        """Everything that arrived since the last call; waits only when nothing has."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._pending is None:
            if self._closed:
                raise trio.ClosedResourceError("the mailbox is closed")
            await self._lot.park()
        output, self._pending = self._pending, None
        return output

    async def ended(self) -> SequenceEnd:
        """The sequence's end, once the engine has sent it (its text may still wait here).

        Raises:
            trio.ClosedResourceError: the reader is gone.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.end is None:
            if self._closed:
                raise trio.ClosedResourceError("the mailbox is closed")
            await self._end_lot.park()
        return self.end

    def seal(self) -> None:
        """The session is done: later `put`s answer False; what waits is still read."""
        self._sealed = True

    def close(self) -> None:
        """The reader is gone: later `put`s answer False (the sequence is then dropped)."""
        self._closed = True
        self._pending = None
        self._lot.unpark_all()
        self._end_lot.unpark_all()

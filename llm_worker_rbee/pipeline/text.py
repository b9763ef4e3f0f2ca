"""Turning token pieces into text a client may see: UTF-8 safe, stop strings held back."""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

from llm_worker_rbee.messages.inference import TURN_HEADER

_HEADER = re.compile(r"\n[A-Z][A-Za-z]{0,23}:")
# The end of the text that may still grow into a header: held back until it cannot.
_HEADER_START = re.compile(r"\n(?:[A-Z][A-Za-z]{0,23})?\Z")


class PieceDecoder:
    """Decodes token pieces incrementally; a character split across tokens waits whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return str(self._decoder.decode(piece, final=False))

    def flush(self) -> str:
        return str(self._decoder.decode(b"", final=True))


class StopMatcher:
    """Finds stop strings in streamed text, across token borders.

    Text that could still be the start of a stop string is held back until it can't; the stop
    string itself, and anything after it, is never released.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._headers = TURN_HEADER in stops
        self._stops = tuple(s for s in stops if s and s != TURN_HEADER)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Returns the text that is safe to release now."""
        if self.matched is not None:
            return ""
        buffer = self._held + text
        if not self._stops and not self._headers:
            return buffer
        first: tuple[int, str] | None = None
        for stop in self._stops:
            index = buffer.find(stop)
            if index >= 0 and (first is None or index < first[0]):
                first = (index, stop)
        header = _HEADER.search(buffer) if self._headers else None
        if header is not None and (first is None or header.start() < first[0]):
            first = (header.start(), header.group())
        if first is not None:
            self.matched = first[1]
            self._held = ""
            return buffer[: first[0]]
        hold = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """At the end of generation, held text can no longer become a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _partial_suffix(self, buffer: str) -> int:
        longest = 0
        if self._headers:
            start = _HEADER_START.search(buffer)
            longest = 0 if start is None else len(start.group())
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest

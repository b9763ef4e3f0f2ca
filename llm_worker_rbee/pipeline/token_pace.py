"""TokenPace: the seconds a slot spends per generated token while the engine is busy, which
the SlotScheduler turns the tokens of queued work into a wait with (actors/scheduler.py)."""

from __future__ import annotations

from collections.abc import Callable

# Per step: the pace of the last hundred or so steps, so a change of load shows within
# seconds while one slow step (a long prompt chunk) moves it little.
DECAY = 0.98
# The warm-up's figure counts as this many tokens: live steps outweigh it within a few.
SEED_TOKENS = 8.0


class TokenPace:
    """Slot-seconds per generated token over recent busy steps (decayed sums).

    A step's cost is the time from its start to the next step's start (on the engine thread
    that includes the loop's own work; in virtual time the step's sleep), times the sequences
    in it, shared among the tokens it generated: steps that only read prompts count too, so
    the pace says what the work costs, prompts included. A step after which nothing runs is
    not counted: the time to the next one is idle, not work.
    """

    def __init__(self, clock: Callable[[], float], seed_s: float | None = None) -> None:
        self._clock = clock
        self._slot_s = 0.0 if seed_s is None else seed_s * SEED_TOKENS
        self._tokens = 0.0 if seed_s is None else SEED_TOKENS
        # (start, sequences, tokens) of the previous step while work went on after it.
        self._previous: tuple[float, int, int] | None = None

    def seconds(self) -> float | None:
        """Slot-seconds per token; None before anything was measured or seeded."""
        return self._slot_s / self._tokens if self._tokens > 0 else None

    def step_started(self) -> float:
        now = self._clock()
        if self._previous is not None:
            start, sequences, tokens = self._previous
            self._slot_s = self._slot_s * DECAY + (now - start) * sequences
            self._tokens = self._tokens * DECAY + tokens
            self._previous = None
        return now

    def step_ended(self, start: float, sequences: int, tokens: int, *, busy: bool) -> None:
        """`busy`: sequences are still running, so the next step follows at once."""
        self._previous = (start, sequences, tokens) if busy and sequences else None

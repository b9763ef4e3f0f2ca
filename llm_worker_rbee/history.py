"""The status page's history: a sample a second of what the worker did, in a bounded ring.

A task on the trio thread (`page_status.keep_history`) reads the actors' statistics
snapshots once a second and `record`s them here; the per-token path never writes here.
Each sample is the difference between two readings, so a reading costs what a `/metrics`
scrape costs and nothing is counted twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llm_worker_rbee.pipeline.decode import SequenceProgress

# Five minutes at one sample a second: what the page's charts show.
HISTORY_SIZE = 300


@dataclass(frozen=True, slots=True)
class Reading:
    """The worker's counters at one instant, read from its snapshots."""

    at: float  # trio's clock
    wall: float  # the wall clock, seconds since the epoch
    tokens_generated: int
    ttft_sum: float  # seconds, over every first token so far
    ttft_count: int
    slots_busy: int
    queue_depth: int
    kv_used: float  # 0..1 of the context's cells
    sequences: tuple[SequenceProgress, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """What happened between two readings."""

    n: int  # counts up from 1: a reader asks for the samples after the last it has
    at: float  # the wall clock at the end of the interval
    tokens_per_s: float
    ttft_ms: float | None  # the mean of the first tokens in the interval; None: there were none
    first_tokens: int
    slots_busy: int
    queue_depth: int
    kv_used: float


class StatusHistory:
    """The last `size` samples, and each running job's tokens/s over the last interval."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self.size = size
        self._samples: deque[Sample] = deque(maxlen=size)
        self._last: Reading | None = None
        self._count = 0
        self.job_rates: dict[str, float] = {}

    def record(self, reading: Reading) -> Sample | None:
        """Adds the sample since the previous reading (None for the first reading)."""
        previous, self._last = self._last, reading
        if previous is None or reading.at <= previous.at:
            return None
        seconds = reading.at - previous.at
        firsts = reading.ttft_count - previous.ttft_count
        ttft = (reading.ttft_sum - previous.ttft_sum) / firsts * 1000 if firsts > 0 else None
        before = {seq.job_id: seq.generated for seq in previous.sequences}
        self.job_rates = {
            seq.job_id: (seq.generated - before[seq.job_id]) / seconds
            for seq in reading.sequences
            if seq.job_id in before
        }
        self._count += 1
        sample = Sample(
            n=self._count,
            at=round(reading.wall, 3),
            tokens_per_s=round((reading.tokens_generated - previous.tokens_generated) / seconds, 2),
            ttft_ms=None if ttft is None else round(ttft, 1),
            first_tokens=firsts,
            slots_busy=reading.slots_busy,
            queue_depth=reading.queue_depth,
            kv_used=round(reading.kv_used, 4),
        )
        self._samples.append(sample)
        return sample

    def since(self, n: int = 0) -> list[Sample]:
        """The samples after the `n`th, oldest first (all of them for 0)."""
        return [sample for sample in self._samples if sample.n > n]

"""Levels measured in rounds: the bare loop and the worker back to back, round after round.

A shared 2-core VM's speed drifts by 10% or more from one minute to the next, more than the
differences the targets look at. A round measures every level of the bare loop and of the
worker within a couple of minutes; a figure is the median over the rounds, and a ratio the
median of the rounds' own ratios, so a slow minute cannot land on one side only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median

from bench.bare import BareResult
from bench.load import LoadResult

# Each round's requests get prompts of their own: a prompt seen in an earlier round would
# come from the slot's cache, and its time to first token would not include the prefill.
ROUND_INDEX_STEP = 1000


@dataclass
class Rounds:
    """One contender at one level, over the rounds."""

    concurrency: int
    loads: list[LoadResult] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    @property
    def aggregate_tps(self) -> float:
        return median(load.aggregate_tps for load in self.loads)

    @property
    def pooled(self) -> LoadResult:
        """Every round's streams together (time to first token and per-stream percentiles)."""
        streams = [s for load in self.loads for s in load.streams]
        return LoadResult(self.concurrency, sum(load.wall_s for load in self.loads), streams)

    def add(self, load: LoadResult, peak_rss_mb: float) -> None:
        self.loads.append(load)
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb)

    def spread(self) -> str:
        return ", ".join(f"{load.aggregate_tps:.1f}" for load in self.loads)


@dataclass
class BareRounds:
    sequences: int
    runs: list[BareResult] = field(default_factory=list)

    @property
    def aggregate_tps(self) -> float:
        return median(run.aggregate_tps for run in self.runs)

    @property
    def prompt_s(self) -> float:
        return median(run.prompt_s for run in self.runs)

    @property
    def decode_tps(self) -> float:
        return median(run.decode_tps for run in self.runs)

    def spread(self) -> str:
        return ", ".join(f"{run.aggregate_tps:.1f}" for run in self.runs)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median of a[i] / b[i], both measured in round i; NaN when either side is missing."""
    if not a or len(a) != len(b) or any(x <= 0 for x in b):
        return math.nan
    return median(x / y for x, y in zip(a, b, strict=True))

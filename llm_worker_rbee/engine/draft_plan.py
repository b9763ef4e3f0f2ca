"""Which drafts a step verifies, and how long: the ones that make it give the most tokens per
second, by what its decodes cost on this machine.

What a draft costs is not one number. On a CPU a step with one row of logits multiplies
the output layer (262k x 640 for Gemma 3) as a vector; with two rows llama.cpp takes its
matrix kernels, and on a 2-core AVX-512 EPYC the second row doubles the step (11.5 ms, then
24.9), while each row after that adds about 2 ms and eight rows cost less than six
(docs/PERFORMANCE.md); 33 rows cost 118 ms, 32 rows 94. On a GPU rows are nearly free. So
the costs are measured, not assumed: the load's warm-up times each row count of TOTALS a
step may have (LlamaEngine.warm_up, the faster of two decodes), and every decode step
without a prompt chunk moves its count's cost. A step totals one of TOTALS or every
proposed token; a count above every one timed is priced as the largest timed one
(optimistic, so it is tried once), one between two timed ones on the line between them.

Given each stream's proposal and each proposed token's chance of being kept
(NgramDrafter.chances: its own chance once the tokens before it were kept, times theirs),
a draft's expected tokens are 1 plus the sum of its tokens' chances.
The step's expected tokens per second over R draft rows is (streams + the R largest
chances) / cost(streams + R), and the plan takes the R that maximizes it, R = 0 included:
drafts that do not pay are not made.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Row counts a step with drafts may total (besides all its streams' proposals): the cost of
# each is learned, so there are few of them, and the warm-up times each.
TOTALS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
# How much one new timing moves a row count's cost.
WEIGHT = 0.2


@dataclass
class StepCosts:
    """Seconds of a decode step by its rows of logits, each a moving average of the steps
    that had that many."""

    seconds: dict[int, float] = field(default_factory=dict)

    def observe(self, rows: int, seconds: float) -> None:
        old = self.seconds.get(rows)
        self.seconds[rows] = seconds if old is None else old + WEIGHT * (seconds - old)

    def cost(self, rows: int) -> float | None:
        """The cost of `rows`: measured; between two measured counts, on the line between
        them; above every measured count, the largest one's (optimistic, so it gets tried);
        None when nothing is measured at or below it."""
        if rows in self.seconds:
            return self.seconds[rows]
        known = sorted(self.seconds)
        at = bisect_left(known, rows)
        if at == 0:
            return None
        low = known[at - 1]
        if at == len(known):
            return self.seconds[low]
        high = known[at]
        share = (rows - low) / (high - low)
        return self.seconds[low] + share * (self.seconds[high] - self.seconds[low])


def plan(costs: StepCosts, proposals: list[list[float]], room: int) -> list[int]:
    """Draft lengths, one for each stream's proposal (its tokens' chances of being kept,
    never rising), using `room` draft rows at most; all zero when no draft is expected to
    pay."""
    streams = len(proposals)
    base = costs.cost(streams)
    lengths = [0] * streams
    if base is None or room <= 0:
        return lengths
    # Each proposed token's chance with its stream, largest first: a stream's tokens stay
    # in their order, so the first R are a prefix of each proposal.
    gains = sorted(
        (
            (chance, -j, i)
            for i, chances in enumerate(proposals)
            for j, chance in enumerate(chances)
        ),
        reverse=True,
    )
    best_rows, best_rate = 0, streams / base
    expected, taken = float(streams), 0
    every = streams + min(room, len(gains))  # each proposed token, as far as room goes
    for total in sorted({*(t for t in TOTALS if streams < t < every), every}):
        rows = total - streams
        while taken < rows:
            expected += gains[taken][0]
            taken += 1
        cost = costs.cost(total)
        if cost is not None and expected / cost > best_rate:
            best_rows, best_rate = rows, expected / cost
    for _, _, i in gains[:best_rows]:
        lengths[i] += 1
    return lengths

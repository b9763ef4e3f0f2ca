"""What every contender is given: the same prompts, token budget, sampling and machine share."""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_TOKENS = 128
CTX_SIZE = 4096
LEVELS = (1, 4, 8)

# Fixed prompts, one per request (round-robin), 15 to 25 tokens each.
PROMPTS = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "The history of the Roman Empire begins with the founding of the city, when",
    "Here is a recipe for a simple tomato soup. First, take four ripe tomatoes and",
    "In computer science, a hash table is a data structure that",
    "The weather report for tomorrow: in the morning, clouds will",
    "Dear Sir or Madam, I am writing to complain about the delivery of my order, which",
    "The three most important things to know about volcanoes are",
    "Chapter one. The train was late again, and Maria stood on the platform thinking about",
)

# llama.cpp's usual defaults, sent explicitly so every server samples alike.
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


@dataclass(frozen=True)
class Machine:
    threads: int
    ctx_size: int = CTX_SIZE
    batch_invariant: bool = False  # this worker in its exact mode (`--batch-invariant`)

    @staticmethod
    def here() -> Machine:
        return Machine(threads=os.cpu_count() or 1)


def prompt_for(index: int) -> str:
    """A prompt no other request shares beyond its first tokens, so no server's prompt
    cache can skip the prefill: every time to first token includes the whole prompt."""
    return f"({index}) {PROMPTS[index % len(PROMPTS)]}"


def requests_for(concurrency: int, *, quick: bool = False) -> int:
    """Requests sent at one level: at least 8 (TTFT percentiles), at least 2 per stream."""
    return concurrency if quick else max(8, 2 * concurrency)


def slots_for(concurrency: int) -> int:
    """Slots this worker runs with at a level: 4 (the default) unless more streams come."""
    return max(4, concurrency)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

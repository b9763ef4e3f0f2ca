"""Prometheus metrics with vLLM-style names, fed by the actors' message trace.

The worker's tracer hook already sees every message (Acquire, Granted, TextDelta, Ended,
Rejected...), so latencies are measured from those, in trio's clock, with no extra calls in
the actors. Gauges are read from the actors' statistics at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llm_worker_rbee.messages.session import Ended, ErrorInfo, Rejected, TextDelta
from llm_worker_rbee.messages.slots import Acquire, Granted

PREFIX = "llm_worker:"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1)
# The errors the status page lists (GET /v1/status): the last few, newest last.
RECENT_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the gauges show, read from the actors when scraped."""

    running: int
    waiting: int
    slots_busy: int
    slots_total: int
    kv_usage: float
    # N-gram speculation's draft tokens decoded and kept, since the load (counters).
    drafted: int = 0
    accepted: int = 0


@dataclass(frozen=True, slots=True)
class RecentError:
    """A request that ended in an error or was refused, for the status page."""

    at: float  # trio's clock
    job_id: str
    error: ErrorInfo


@dataclass
class _Timing:
    arrived: float
    last_token: float | None = None


class WorkerMetrics:
    """One registry per worker (never the global one), so tests and scenarios stay apart."""

    def __init__(self, snapshot: Callable[[], Snapshot] | None = None) -> None:
        self.registry = CollectorRegistry()
        # Set once the actors exist; until then the gauges read zero.
        self.snapshot = snapshot or (lambda: Snapshot(0, 0, 0, 0, 0.0))
        self._timing: dict[str, _Timing] = {}
        # Appended once per failed request (never per token), read by the status page.
        self.recent_errors: deque[RecentError] = deque(maxlen=RECENT_ERRORS)
        r = self.registry
        self.running = Gauge(f"{PREFIX}num_requests_running", "requests holding a slot", registry=r)
        self.waiting = Gauge(f"{PREFIX}num_requests_waiting", "requests in the queue", registry=r)
        self.slots_busy = Gauge(f"{PREFIX}slots_busy", "slots in use", registry=r)
        self.slots_total = Gauge(f"{PREFIX}slots_total", "slots configured", registry=r)
        self.kv_usage = Gauge(
            f"{PREFIX}kv_cache_usage_perc", "KV cache cells in use, 0..1", registry=r
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}prompt_tokens", "prompt tokens of finished requests", registry=r
        )
        self.generation_tokens = Counter(
            f"{PREFIX}generation_tokens", "tokens generated for finished requests", registry=r
        )
        self.finished = Counter(
            f"{PREFIX}request_success",
            "requests finished, by stop reason",
            ["finished_reason"],
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}request_rejected", "requests refused, by error code", ["code"], registry=r
        )
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds",
            "arrival to first streamed text",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            f"{PREFIX}time_per_output_token_seconds",
            "time between tokens after the first",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}e2e_request_latency_seconds",
            "arrival to the final event",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.drafted = Counter(
            f"{PREFIX}spec_decode_num_draft_tokens",
            "n-gram draft tokens verified (vLLM's name)",
            registry=r,
        )
        self.accepted = Counter(
            f"{PREFIX}spec_decode_num_accepted_tokens",
            "draft tokens the model's own sampling kept",
            registry=r,
        )
        self._seen = (0, 0)  # the engine's totals at the last scrape
        self.queue_time = Histogram(
            f"{PREFIX}request_queue_time_seconds",
            "arrival to getting a slot",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def observe(self, recipient: str, message: object) -> None:
        """A Tracer: called for every message an actor sends."""
        now = trio.current_time()
        if isinstance(message, Acquire):
            self._timing[message.job_id] = _Timing(arrived=now)
            return
        job = recipient.partition(":")[2]
        timing = self._timing.get(job)
        if isinstance(message, Granted) and timing is not None:
            self.queue_time.observe(now - timing.arrived)
        elif isinstance(message, TextDelta) and timing is not None:
            if timing.last_token is None:
                self.ttft.observe(now - timing.arrived)
            else:
                per_token = (now - timing.last_token) / max(message.tokens, 1)
                observe_times(self.itl, per_token, message.tokens)
            timing.last_token = now
        elif isinstance(message, Ended):
            self._timing.pop(job, None)
            if timing is not None:
                self.e2e.observe(now - timing.arrived)
            self.finished.labels(message.stop_reason).inc()
            self.prompt_tokens.inc(message.tokens_in)
            self.generation_tokens.inc(message.tokens_out)
            if message.error is not None:
                self.recent_errors.append(RecentError(now, job, message.error))
        elif isinstance(message, Rejected):
            self._timing.pop(job, None)
            self.rejected.labels(message.error.code).inc()
            self.recent_errors.append(RecentError(now, job, message.error))

    def render(self) -> bytes:
        snap = self.snapshot()
        self.running.set(snap.running)
        self.waiting.set(snap.waiting)
        self.slots_busy.set(snap.slots_busy)
        self.slots_total.set(snap.slots_total)
        self.kv_usage.set(snap.kv_usage)
        drafted, accepted = self._seen
        self.drafted.inc(max(0, snap.drafted - drafted))
        self.accepted.inc(max(0, snap.accepted - accepted))
        self._seen = (snap.drafted, snap.accepted)
        return bytes(generate_latest(self.registry))


def histogram_totals(histogram: Histogram) -> tuple[float, int]:
    """(sum, count) of a label-less Histogram's observations so far, read from the same
    internals as `observe_times` (`collect()` would build every bucket's sample)."""
    count = sum(bucket.get() for bucket in histogram._buckets)
    return histogram._sum.get(), round(count)


def observe_times(histogram: Histogram, value: float, times: int) -> None:
    """`times` observations of one value in one update: a delta that carries many tokens
    counts each of them, without a Python loop per token on the hot path.

    Uses the Histogram's internals (`_sum`, `_buckets`, `_upper_bounds`), stable across
    prometheus_client 0.x; tests/test_metrics.py checks it against single observations.
    """
    if times <= 0:
        return
    histogram._sum.inc(value * times)
    histogram._buckets[bisect_left(histogram._upper_bounds, value)].inc(times)

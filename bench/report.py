"""One table, then the ratios the issue sets as targets."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    contender: str
    streams: int
    done: str  # streams that got every token / streams
    aggregate_tps: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    decode_tps: float  # per stream
    peak_rss_mb: float


@dataclass(frozen=True)
class Check:
    what: str
    value: float
    target: str
    met: bool | None  # None: nothing to compare with


def _f(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def table(rows: list[Row]) -> str:
    head = (
        "| contender | streams | complete | aggregate tok/s | TTFT p50 ms | TTFT p95 ms "
        "| decode tok/s per stream | peak RSS MB |"
    )
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r.contender} | {r.streams} | {r.done} | {_f(r.aggregate_tps)} "
            f"| {_f(r.ttft_p50_ms, 0)} | {_f(r.ttft_p95_ms, 0)} | {_f(r.decode_tps)} "
            f"| {_f(r.peak_rss_mb, 0)} |"
        )
    return "\n".join(lines)


def checks(items: list[Check]) -> str:
    lines = ["| ratio / figure | value | target | met |", "|---|--:|---|---|"]
    for c in items:
        met = "n/a" if c.met is None else ("yes" if c.met else "**no**")
        lines.append(f"| {c.what} | {_f(c.value, 2)} | {c.target} | {met} |")
    return "\n".join(lines)


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")

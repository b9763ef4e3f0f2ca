"""This worker's two engine modes beside llama.cpp's `llama-server`, in the same rounds.

`python -m bench.anchor --llama-server PATH` (docs/PERFORMANCE.md has the build recipe):
each contender serves the bundled model with 8 slots, a 4096-token context and the same
threads; every round measures 1, 4 and 8 streams of each contender back to back (the first
wave of a level arrives together), so a slow minute of a shared VM lands on every side, and
every other round takes the contenders in the reverse order, so a VM that speeds up or slows
down over a round does not favour whoever goes first. The bare decode loop (bench/bare.py,
in this process, no HTTP) runs in the same rounds twice: on one KV pool, as the worker's fast
mode, and on a KV stream per slot, as llama-server with `-np 8` (which gives each slot a
fixed 4096/8 cells). The table gives medians of aggregate tokens/s and pooled
time-to-first-token percentiles, and the ratios the targets of issue #15 name, with every
round's own ratio beside the median.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from statistics import median

import trio

from bench.bare import bare_loop, model_facts
from bench.common import CTX_SIZE, LEVELS, MAX_TOKENS, Machine, requests_for
from bench.load import run_load, warm_up
from bench.machine import cpu_model
from bench.rounds import ROUND_INDEX_STEP, BareRounds, Rounds, paired_ratio
from bench.servers import Served, free_port
from llm_worker_rbee.inspection.bundled import bundled_model_path

SLOTS = 8
BARE_POOL = "bare loop, one KV pool"
BARE_STREAMS = "bare loop, a KV stream per slot"


def worker(model: Path, threads: int, *extra: str) -> Served:
    command = [
        sys.executable, "-m", "llm_worker_rbee", "serve", "--model", str(model), "--port", "0",
        "--slots", str(SLOTS), "--ctx-size", str(CTX_SIZE), "--threads", str(threads), *extra,
    ]  # fmt: skip
    name = "llm-worker-rbee" + (" --batch-invariant" if extra else " (fast)")
    served = Served(name, command, re.compile(r"ready: ")).start()
    listening = re.compile(r"listening on (http://\S+)")
    served.url = next(m.group(1) for line in served.lines if (m := listening.search(line)))
    return served


def llama_server(binary: str, model: Path, threads: int) -> Served:
    """`--no-repack`: on some VMs llama.cpp's repacked CPU weights die with an illegal
    instruction; the worker keeps them off too (docs/PERFORMANCE.md)."""
    port = free_port()
    command = [
        binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(CTX_SIZE), "-np", str(SLOTS), "-t", str(threads), "-b", "512", "--no-repack",
    ]  # fmt: skip
    served = Served("llama-server", command, re.compile(r"listening"))
    served.url = f"http://127.0.0.1:{port}"
    return served.start()


def _log(message: str) -> None:
    print(f"[anchor {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anchor", description=__doc__)
    parser.add_argument("--llama-server", required=True, help="path of llama.cpp's llama-server")
    parser.add_argument("--model", type=Path, help="GGUF (default: the bundled model)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--modes",
        default="fast,exact",
        help="the worker's modes to measure, comma-separated: fast, exact (--batch-invariant)",
    )
    args = parser.parse_args(argv)
    model = args.model or bundled_model_path()
    facts = model_facts(model)
    modes = {m.strip() for m in args.modes.split(",")}
    if not modes or modes - {"fast", "exact"}:
        parser.error("--modes takes fast, exact or both")
    contenders: list[Served] = []
    try:
        if "fast" in modes:
            contenders.append(worker(model, args.threads))
        if "exact" in modes:
            contenders.append(worker(model, args.threads, "--batch-invariant"))
        contenders.append(llama_server(args.llama_server, model, args.threads))
        for served in contenders:
            trio.run(partial(warm_up, served.url, eog=facts.eog))
        results = {s.name: {c: Rounds(c) for c in LEVELS} for s in contenders}
        bare = {name: {c: BareRounds(c) for c in LEVELS} for name in (BARE_POOL, BARE_STREAMS)}
        layouts = {
            BARE_POOL: Machine(threads=args.threads),
            BARE_STREAMS: Machine(threads=args.threads, batch_invariant=True),
        }
        for round_ in range(args.rounds):
            # Every other round in the reverse order: drift within a round favours nobody.
            flip = round_ % 2 == 1
            order = list(reversed(contenders)) if flip else contenders
            for c in LEVELS:
                for name, machine in reversed(layouts.items()) if flip else layouts.items():
                    _log(f"round {round_ + 1}: {name}, {c} sequences")
                    with bare_loop(model, machine) as run_bare:
                        bare[name][c].runs.append(run_bare(c))
                for served in order:
                    requests = requests_for(c)
                    _log(f"round {round_ + 1}: {served.name}, {requests} requests, {c} at once")
                    load = trio.run(
                        partial(
                            run_load, served.url, c, requests, eog=facts.eog,
                            first_index=round_ * ROUND_INDEX_STEP,
                        )
                    )  # fmt: skip
                    results[served.name][c].add(load, float("nan"))
    finally:
        for served in contenders:
            served.stop()
    _print(results, bare, args.threads, args.rounds)
    return 0


def _print(
    results: dict[str, dict[int, Rounds]],
    bare: dict[str, dict[int, BareRounds]],
    threads: int,
    rounds: int,
) -> None:
    print(
        f"\n## {os.cpu_count()} cores ({cpu_model()}), {threads} threads, {SLOTS} slots, ctx "
        f"{CTX_SIZE}, {MAX_TOKENS} tokens per stream, {rounds} rounds, load average "
        f"{os.getloadavg()[0]:.2f} at the end\n"
    )
    print("| contender | streams | done | tok/s (median; each round) | TTFT p50 ms | TTFT p95 ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, levels in results.items():
        for c, r in levels.items():
            pooled = r.pooled
            print(
                f"| {name} | {c} | {pooled.complete}/{len(pooled.streams)} | "
                f"{r.aggregate_tps:.1f} ({r.spread()}) | {pooled.ttft_ms(50):.0f} | "
                f"{pooled.ttft_ms(95):.0f} |"
            )
    server = results["llama-server"]
    print(
        "\n| vs llama-server | streams | tok/s ratio: median (each round) "
        "| rounds at >= 0.95 | TTFT p50 ratio |"
    )
    print("|---|--:|--:|--:|--:|")
    for name, levels in results.items():
        if name == "llama-server":
            continue
        for c, r in levels.items():
            ratios = [
                a.aggregate_tps / b.aggregate_tps
                for a, b in zip(r.loads, server[c].loads, strict=True)
            ]
            each = ", ".join(f"{x:.2f}" for x in ratios)
            at_least = sum(x >= 0.95 for x in ratios)
            ttft = r.pooled.ttft_ms(50) / server[c].pooled.ttft_ms(50)
            print(
                f"| {name} | {c} | {median(ratios):.2f} ({each}) | {at_least}/{len(ratios)} "
                f"| {ttft:.2f} |"
            )
    print("\n| bare loop | sequences | tok/s (median; each round) |")
    print("|---|--:|--:|")
    for name, levels_ in bare.items():
        for c, b in levels_.items():
            print(f"| {name} | {c} | {b.aggregate_tps:.1f} ({b.spread()}) |")
    print("\n| contender / bare loop of its KV layout | streams | tok/s ratio (median of rounds) |")
    print("|---|--:|--:|")
    for name, levels in results.items():
        per_slot = name == "llama-server" or "--batch-invariant" in name
        layout = BARE_STREAMS if per_slot else BARE_POOL
        for c, r in levels.items():
            runs = [run.aggregate_tps for run in bare[layout][c].runs]
            ratio = paired_ratio([load.aggregate_tps for load in r.loads], runs)
            print(f"| {name} / {layout} | {c} | {ratio:.2f} |")


if __name__ == "__main__":
    raise SystemExit(main())

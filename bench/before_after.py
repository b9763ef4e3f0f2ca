"""The per-token pipeline of this checkout against another revision's, on the same machine,
in alternating rounds: `python -m bench.before_after --before DIR [--rounds 5]`.

DIR is a checkout of the older revision (`git worktree add /tmp/before REV`); its own
`bench/pipeline.py` serves its own package on the scripted fake engine, so each side runs
exactly its code. Each round measures both sides, the order reversed every other round:

- **pipeline**: 64 streams of `--tokens` (default 4096) tokens at once, zero step latency
  (bench/pipeline.py): streamed tokens/s the Python side carries when the engine is never
  the bottleneck (bench/pipeline.py's own 512 tokens a stream last about half a second
  here, too short to tell a few percent from the machine's noise);
- **event-loop CPU per token**: one stream of 300 tokens at a time, a step every 5 ms as a
  real engine spaces them (bench/wakeups.py): what each token costs the event-loop thread,
  which on 2 cores is taken from llama.cpp's threads.

Medians over the rounds; the client shares the machine with the server.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from bench.pipeline import run_pipeline, start_fake_worker
from bench.wakeups import TOKENS as SPACED_TOKENS
from bench.wakeups import cpu_per_token

SPACING_S = 0.005


def _measure(tree: Path | None, tokens: int) -> tuple[float, float]:
    """(pipeline tokens/s, event-loop µs per token at SPACING_S) for one side."""
    served = start_fake_worker(tokens=tokens, tree=tree)
    try:
        pipeline = trio.run(partial(run_pipeline, served.url, tokens=tokens))
    finally:
        served.stop()
    served = start_fake_worker(slots=4, tokens=SPACED_TOKENS, step_seconds=SPACING_S, tree=tree)
    try:
        assert served.proc is not None
        cpu = trio.run(cpu_per_token, served.url, served.proc.pid)
    finally:
        served.stop()
    return pipeline.tps, cpu * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=4096, help="a pipeline stream's")
    args = parser.parse_args(argv)
    sides: dict[str, tuple[Path | None, list[tuple[float, float]]]] = {
        "before": (args.before.resolve(), []),
        "after": (None, []),
    }
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for name in order:
            tree, results = sides[name]
            results.append(_measure(tree, args.tokens))
            tps, cpu = results[-1]
            print(f"round {round_ + 1} {name}: {tps:,.0f} tokens/s, {cpu:.0f} µs/token", flush=True)
    print(f"\n| side | pipeline tokens/s, median of {args.rounds} | event-loop CPU per token |")
    print("|---|--:|--:|")
    for name, (_, results) in sides.items():
        tps = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        print(f"| {name} | {tps:,.0f} | {cpu:.0f} µs |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

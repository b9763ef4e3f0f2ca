"""N-gram speculation on echo-heavy work and on free generation, worker against itself.

`python -m bench.echo [--rounds 5] [--streams 1,4,8] [--threads 2]` starts the worker once
(the bundled model, fast mode, `--slots 8`) and sends, at each number of concurrent streams,
the same greedy completions (temperature 0, 160 tokens, end of text ignored) with
speculation off (`"speculative.n_max": 0`) and on (the worker's default), alternating which
goes first each round. Workloads: `echo` (a short Python file, then "the same file again,
with `total` renamed to `result`:"), `quote` (a passage, then "Quoted exactly:"), `json` (a
JSON object, then "The same object with one more key:") and `free` (the bench's ordinary
prompts). It prints the median tokens/s of each and the speedup, plus the drafted and
accepted counts from `/metrics`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.bursts import counter
from bench.common import PROMPTS
from llm_worker_rbee.testing.process import WorkerProcess

TOKENS = 160
CODE = '''def summarize(orders):
    """Total, count and mean of the orders' amounts, skipping refunds."""
    total = 0
    count = 0
    for order in orders:
        if order.get("refunded"):
            continue
        total += order["amount"]
        count += 1
    mean = total / count if count else 0
    return {"total": total, "count": count, "mean": mean}
'''
PASSAGE = (
    "The lighthouse keeper wrote the weather into the log, as he did every evening: wind "
    "from the south-west, a falling glass, a heavy swell running in from the open sea. "
    "Then he climbed the stairs, trimmed the wick, and watched the beam sweep across the "
    "water until the last fishing boat had rounded the point and come safely home."
)
RECORD = {
    "id": 4182, "name": "Ada Lovelace", "email": "ada@example.org", "city": "London",
    "roles": ["admin", "editor"], "active": True, "score": 97.5, "team": "analytics",
}  # fmt: skip

WORKLOADS = {
    "echo": f"```python\n{CODE}```\n\nThe same file again, with `total` renamed to "
    "`result`:\n\n```python\n",
    "quote": f'{PASSAGE}\n\nQuoted exactly:\n\n"',
    "json": f'{json.dumps(RECORD, indent=2)}\n\nThe same object with one more key, "country":\n\n',
}


def prompts(workload: str, streams: int) -> list[str]:
    if workload == "free":
        return [PROMPTS[i % len(PROMPTS)] for i in range(streams)]
    return [WORKLOADS[workload]] * streams


def run(url: str, workload: str, streams: int, speculate: bool) -> float:
    """Tokens/s of `streams` concurrent greedy completions of TOKENS tokens."""
    extra = {} if speculate else {"speculative.n_max": 0}

    def one(prompt: str) -> int:
        body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}
        reply = httpx.post(f"{url}/v1/completions", json={**body, **extra}, timeout=600)
        reply.raise_for_status()
        return int(reply.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        tokens = sum(pool.map(one, prompts(workload, streams)))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default="echo,quote,json,free")
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    workloads = args.workloads.split(",")
    worker = WorkerProcess(
        ["--slots", "8", "--ctx-size", "8192", "--threads", str(args.threads)]
    ).start()
    rates: dict[tuple[str, int, bool], list[float]] = {}
    try:
        for workload in workloads:
            run(worker.url, workload, 1, True)  # the prompt in a slot's cache, as for every round
        for round_index in range(args.rounds):
            for workload in workloads:
                for streams in levels:
                    order = (False, True) if round_index % 2 == 0 else (True, False)
                    for speculate in order:
                        rate = run(worker.url, workload, streams, speculate)
                        rates.setdefault((workload, streams, speculate), []).append(rate)
                        mode = "ngram" if speculate else "off"
                        print(f"{workload} {streams} {mode}: {rate:.1f} tokens/s", flush=True)
            print(f"round {round_index + 1} done", flush=True)
        drafted = counter(worker.url, "llm_worker:spec_decode_num_draft_tokens_total")
        accepted = counter(worker.url, "llm_worker:spec_decode_num_accepted_tokens_total")
    finally:
        worker.stop()
    print("\n| workload | streams | off, tokens/s | ngram, tokens/s | speedup |")
    print("|---|---|---|---|---|")
    for workload in workloads:
        for streams in levels:
            off = statistics.median(rates[(workload, streams, False)])
            on = statistics.median(rates[(workload, streams, True)])
            print(f"| {workload} | {streams} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
    print(f"\ndrafted {drafted:.0f}, accepted {accepted:.0f} ({accepted / max(drafted, 1):.0%})")


if __name__ == "__main__":
    main()

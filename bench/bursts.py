"""Bursts of openai-SDK streams on a worker of four slots, the queue at its defaults.

`python -m bench.bursts [--runs 5] [--threads 2]` runs four cases, each on a worker of its
own started for it (the bundled model, `--slots 4 --ctx-size 8192`): 24 and 48 concurrent
completion streams of 64 tokens (end of text ignored) on the fresh worker, and the same
right after a burst of 24 requests of 4 tokens. The client is the openai SDK with its
defaults (two retries, each after what Retry-After says). The cases take turns within a
run, the order reversed every other run. Per case it prints the streams that completed, the
503s the worker answered (its `request_rejected_total`), the wall time of the burst and its
tokens/s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from llm_worker_rbee.testing.process import WorkerProcess

CASES = (("fresh", 24), ("fresh", 48), ("after 4-token burst", 24), ("after 4-token burst", 48))
TOKENS = 64


def counter(url: str, name: str) -> float:
    """The sum of a Prometheus counter's samples on the worker's /metrics (0 if none)."""
    text = httpx.get(f"{url}/metrics").text
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return sum(float(v) for v in values)


def burst(client: openai.OpenAI, streams: int, tokens: int) -> list[tuple[str, int]]:
    """`streams` completion streams at once, each of `tokens` tokens (end of text ignored;
    completions, so no chat transcript's stop string cuts one short): each answer's finish
    reason ("" if it failed) and how many chunks carried text."""
    model = client.models.list().data[0].id

    def stream(i: int) -> tuple[str, int]:
        finish, texts = "", 0
        try:
            chunks = client.completions.create(
                model=model,
                prompt=f"A few words about the number {i}:",
                max_tokens=tokens,
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},  # every stream its full length
            )
            for chunk in chunks:
                if chunk.choices:
                    texts += bool(chunk.choices[0].text)
                    finish = chunk.choices[0].finish_reason or finish
        except openai.APIError:
            return "", texts
        return finish, texts

    with ThreadPoolExecutor(streams) as pool:
        return list(pool.map(stream, range(streams)))


def run_case(after_short: bool, streams: int, threads: int) -> tuple[int, float, float]:
    """Completed streams, 503s answered, and the burst's seconds, on a new worker."""
    args = ["--slots", "4", "--ctx-size", "8192", "--threads", str(threads)]
    worker = WorkerProcess(args).start()
    try:
        client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", timeout=600)
        if after_short:
            burst(client, 24, 4)
        start = time.perf_counter()
        answers = burst(client, streams, TOKENS)
        took = time.perf_counter() - start
        done = sum(finish == "length" for finish, _ in answers)
        return done, counter(worker.url, "llm_worker:request_rejected_total"), took
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[int, list[float]] = {i: [] for i in range(len(CASES))}
    for run in range(args.runs):
        order = list(range(len(CASES)))
        for i in order if run % 2 == 0 else reversed(order):
            when, streams = CASES[i]
            done, refused, took = run_case(when != "fresh", streams, args.threads)
            seconds[i].append(took)
            print(
                f"run {run + 1} {when:>19}, {streams} streams: {done}/{streams} complete, "
                f"{refused:.0f} refused, {took:.1f} s, {streams * TOKENS / took:.1f} tokens/s",
                flush=True,
            )
    for i, (when, streams) in enumerate(CASES):
        median = statistics.median(seconds[i])
        print(f"median {when:>19}, {streams} streams: {median:.1f} s")


if __name__ == "__main__":
    main()

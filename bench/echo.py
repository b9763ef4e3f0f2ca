"""N-gram speculation on echo-heavy work and on free generation: the worker with it off
and on, and llama-server plain and with its n-gram types.

`python -m bench.echo [--rounds 5] [--streams 1,4,8] [--threads 2]` starts the worker once
(the bundled model, fast mode, `--slots 8`) and sends, at each number of concurrent streams,
the same greedy completions (temperature 0, 160 tokens, end of text ignored) with
speculation off (`"speculative.n_max": 0`) and on (the worker's default), alternating which
goes first each round. Workloads: `echo` (a short Python file, then "Copy:"), `quote` (a
passage, then "Quote:"), `json` (a JSON object, then "The same object with one more key:")
and `free` (the bench's ordinary prompts). It prints the median tokens/s of each, the
drafted and accepted counts from `/metrics`, and for 1 stream what each contender wrote: how
many distinct texts, and how much of them repeats what came before (a near-tie gone another
way writes another text, and a text that repeats less drafts less).

`--batch-invariant` runs the worker in the exact mode (where only a stream alone drafts).
`--llama-server PATH` adds llama.cpp's server (`--no-repack`, the same slots, context and
threads) plain and with each of `--spec-types` (default `ngram-simple,ngram-mod`), each in a
process of its own started once, sent the same requests in the same rounds; the order of
all contenders is reversed every other round.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.bursts import counter
from bench.common import PROMPTS
from bench.servers import Served, free_port
from llm_worker_rbee.inspection.bundled import bundled_model_path
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
    # What the bundled base model copies (it does not follow "with one change" instructions).
    "echo": f"Original:\n```python\n{CODE}```\n\nCopy:\n```python\n",
    "quote": f"Passage:\n{PASSAGE}\n\nQuote:\n",
    "json": f'{json.dumps(RECORD, indent=2)}\n\nThe same object with one more key, "country":\n\n',
}


def prompts(workload: str, streams: int) -> list[str]:
    if workload == "free":
        return [PROMPTS[i % len(PROMPTS)] for i in range(streams)]
    return [WORKLOADS[workload]] * streams


def run(url: str, workload: str, streams: int, extra: dict[str, object]) -> tuple[float, str]:
    """Tokens/s of `streams` concurrent greedy completions of TOKENS tokens, and the first
    one's text."""

    def one(prompt: str) -> tuple[int, str]:
        body = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True}
        reply = httpx.post(f"{url}/v1/completions", json={**body, **extra}, timeout=600)
        reply.raise_for_status()
        answer = reply.json()
        return int(answer["usage"]["completion_tokens"]), str(answer["choices"][0]["text"])

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        done = list(pool.map(one, prompts(workload, streams)))
    return sum(tokens for tokens, _ in done) / (time.perf_counter() - start), done[0][1]


def copied(text: str, prompt: str) -> float:
    """The share of `text`'s characters that its prompt and the text before them already had
    after the same 16 characters: how much of the answer a drafter can copy (the model's
    text decides it, not the server's speed: a near-tie gone another way writes another)."""
    whole, start = prompt + text, len(prompt)
    hits = sum(whole[i - 16 : i + 1] in whole[:i] for i in range(start, len(whole)))
    return hits / max(len(text), 1)


def print_texts(texts: dict[tuple[str, str], list[str]], names: list[str]) -> None:
    """What each contender wrote for each copying workload: how many distinct texts, and the
    median share of them a drafter could copy (`copied`)."""
    workloads = [w for w in WORKLOADS if any((n, w) in texts for n in names)]
    if not workloads:
        return
    print("\n1 stream, what each contender wrote: distinct texts, and the share of an")
    print("answer's characters that followed the same 16 characters before (median)")
    print("\n| workload | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for workload in workloads:
        cells = []
        for name in names:
            wrote = texts.get((name, workload), [])
            runs = [copied(text, WORKLOADS[workload]) for text in wrote]
            cells.append(f"{len(set(wrote))}, {statistics.median(runs):.0%}" if runs else "-")
        print(f"| {workload} | " + " | ".join(cells) + " |")


def worker_args(threads: int) -> list[str]:
    """The worker's flags, as llama_server's: 8 slots, an 8192-token context."""
    return ["--slots", "8", "--ctx-size", "8192", "--threads", str(threads)]


def llama_server(binary: str, threads: int, spec_type: str | None) -> Served:
    port = free_port()
    command = [
        binary, "-m", str(bundled_model_path()), "--host", "127.0.0.1", "--port", str(port),
        "-c", "8192", "-np", "8", "-t", str(threads), "-b", "512", "--no-repack",
    ]  # fmt: skip
    if spec_type is not None:
        command += ["--spec-type", spec_type]
    name = f"llama-server {spec_type or 'plain'}"
    served = Served(name, command, re.compile(r"listening"))
    served.url = f"http://127.0.0.1:{port}"
    return served.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", default="1,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default="echo,quote,json,free")
    parser.add_argument("--llama-server", metavar="PATH", help="llama.cpp's llama-server")
    parser.add_argument("--spec-types", default="ngram-simple,ngram-mod")
    parser.add_argument(
        "--batch-invariant", action="store_true", help="the worker in the exact mode"
    )
    args = parser.parse_args()
    levels = [int(s) for s in args.streams.split(",")]
    workloads = args.workloads.split(",")
    exact = ["--batch-invariant"] if args.batch_invariant else []
    worker = WorkerProcess([*worker_args(args.threads), *exact]).start()
    servers: list[Served] = []
    contenders: dict[str, tuple[str, dict[str, object]]] = {
        "worker off": (worker.url, {"speculative.n_max": 0}),
        "worker ngram": (worker.url, {}),
    }
    rates: dict[tuple[str, str, int], list[float]] = {}
    texts: dict[tuple[str, str], list[str]] = {}  # the 1-stream runs'
    try:
        if args.llama_server:
            for spec_type in (None, *args.spec_types.split(",")):
                served = llama_server(args.llama_server, args.threads, spec_type)
                servers.append(served)
                contenders[served.name] = (served.url, {})

        def warm(url: str, extra: dict[str, object]) -> None:
            # Each prompt once in a slot's cache and in n-gram memories, as in every round.
            for workload in workloads:
                run(url, workload, 1, extra)

        for url, extra in contenders.values():
            warm(url, extra)
        # A contender that failed a request at some number of streams runs no more at that
        # number; a llama-server that died is started again (and warmed) for the rest.
        failed: dict[tuple[str, int], str] = {}
        for round_index in range(args.rounds):
            names = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
            # Fewest streams first: llama-server's ngram-mod has aborted at 8 streams, and
            # its fewer-stream cells of the round are measured before that.
            for streams in levels:
                for workload in workloads:
                    for name in (n for n in names if (n, streams) not in failed):
                        url, extra = contenders[name]
                        try:
                            rate, text = run(url, workload, streams, extra)
                        except httpx.HTTPError as exc:
                            failed[(name, streams)] = f"{workload}, {streams} streams: {exc!r}"
                            print(f"{name} FAILED at {failed[(name, streams)]}", flush=True)
                            for served in servers:  # a server that died says why
                                if served.name == name:
                                    print("".join(served.lines[-8:]), flush=True)
                                    warm(served.restart().url, {})
                            continue
                        rates.setdefault((name, workload, streams), []).append(rate)
                        if streams == 1:
                            texts.setdefault((name, workload), []).append(text)
                        print(f"{workload} {streams} {name}: {rate:.1f} tokens/s", flush=True)
            print(f"round {round_index + 1} done", flush=True)
        drafted = counter(worker.url, "llm_worker:spec_decode_num_draft_tokens_total")
        accepted = counter(worker.url, "llm_worker:spec_decode_num_accepted_tokens_total")
    finally:
        worker.stop()
        for served in servers:
            served.stop()
    names = list(contenders)
    print("\n| workload | streams | " + " | ".join(f"{n}, tokens/s" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for workload in workloads:
        for streams in levels:
            cells = [
                f"{statistics.median(rates[key]):.1f}" if (key := (n, workload, streams)) in rates
                else "failed"
                for n in names
            ]  # fmt: skip
            print(f"| {workload} | {streams} | " + " | ".join(cells) + " |")
    print_texts(texts, names)
    print(f"\nworker: drafted {drafted:.0f}, accepted {accepted:.0f}", end=" ")
    print(f"({accepted / max(drafted, 1):.0%})")
    for (name, _), where in failed.items():
        print(f"{name} failed at {where}")


if __name__ == "__main__":
    main()

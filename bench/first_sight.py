"""N-gram speculation the first time a server sees a text: bench/echo.py's workloads, each sent
once to a server started fresh, so no n-gram memory (the worker's, llama-server's
`ngram-mod`) has the answer yet.

`python -m bench.first_sight [--rounds 3] --llama-server PATH` starts, in each round and in
alternating order, the worker (its defaults: `--speculation ngram`) and llama-server plain
and with each of `--spec-types`, sends each workload once (1 stream, greedy, 160 tokens,
end of text ignored; the prompt's own decode included), and stops it. Medians of tokens/s,
and what each wrote (bench/echo.py's `print_texts`).
bench/echo.py measures the same workloads sent again and again, where such a memory has
the text from the round before.
"""

from __future__ import annotations

import argparse
import statistics

from bench.echo import llama_server, print_texts, run, worker_args
from bench.servers import Served
from llm_worker_rbee.testing.process import WorkerProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default="echo,quote,json,free")
    parser.add_argument("--llama-server", metavar="PATH", required=True)
    parser.add_argument("--spec-types", default="ngram-simple,ngram-mod")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    names = ["worker", *(f"llama-server {t}" for t in ("plain", *args.spec_types.split(",")))]
    rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], list[str]] = {}
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            if name == "worker":
                worker = WorkerProcess(worker_args(args.threads)).start()
                url, stop = worker.url, worker.stop
            else:
                spec_type = name.removeprefix("llama-server ")
                served: Served = llama_server(
                    args.llama_server, args.threads, None if spec_type == "plain" else spec_type
                )
                url, stop = served.url, served.stop
            try:
                for workload in workloads:
                    rate, text = run(url, workload, 1, {})
                    rates.setdefault((name, workload), []).append(rate)
                    texts.setdefault((name, workload), []).append(text)
                    print(f"{workload} {name}: {rate:.1f} tokens/s", flush=True)
            finally:
                stop()
        print(f"round {round_index + 1} done", flush=True)
    print("\n| workload | " + " | ".join(f"{n}, tokens/s" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for workload in workloads:
        cells = [f"{statistics.median(rates[(n, workload)]):.1f}" for n in names]
        print(f"| {workload} | " + " | ".join(cells) + " |")
    print_texts(texts, names)


if __name__ == "__main__":
    main()

"""What the exact mode's fixed prompt chunks cost: prefill time by chunk size, in process.

`python -m bench.exact_chunks [--tokens 1000,3000] [--rounds 5] [--threads 2]` loads the
bundled model once per chunk size into the real engine (`--batch-invariant`, one slot,
`--batch-size 512`) and times how long a cold prompt takes until its first token, each
chunk size in turn within a round and the order reversed every other round (drift within a
round favours nobody). 512 is what the exact mode did before its chunks were fixed (as much
of the prompt as the step's batch took); the worker uses `EXACT_CHUNK`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine import llama as llama_engine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

CHUNKS = (64, 128, 256, 512)
Clock = Callable[[], float]
TEXT = "The lighthouse keeper wrote the weather into the log, as he did every evening. "


def load(chunk: int, ctx: int, threads: int) -> llama_engine.LlamaEngine:
    """An exact-mode engine whose prompt chunks end at multiples of `chunk`."""
    settings = Settings(
        backend="cpu", ctx_size=ctx, slots=1, batch_size=512, threads=threads, batch_invariant=True
    )
    saved = llama_engine.EXACT_CHUNK
    llama_engine.EXACT_CHUNK = chunk  # read once, when the engine is made
    try:
        return llama_engine.LlamaEngine.load(bundled_model_path(), settings, "bench")
    finally:
        llama_engine.EXACT_CHUNK = saved


def prefill_s(engine: llama_engine.LlamaEngine, prompt: Sequence[int], clock: Clock) -> float:
    """Seconds from admission to the first token of a cold prompt."""
    start = clock()
    engine.admit(0, prompt, SamplingParams(temperature=0))
    while not engine.step():
        pass
    took = clock() - start
    engine.cancel(0)
    engine.admit(0, [prompt[-1]], SamplingParams(temperature=0))  # drops the slot's cache
    engine.cancel(0)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1000,3000", help="prompt lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by this process's CPU seconds, not the wall clock: with --threads 1 the "
        "compute itself, whatever else the machine runs",
    )
    args = parser.parse_args()
    clock: Clock = time.process_time if args.cpu_time else time.perf_counter
    lengths = [int(n) for n in args.tokens.split(",")]
    engines = {c: load(c, max(lengths) + 64, args.threads) for c in CHUNKS}
    words = engines[CHUNKS[0]].tokenize(TEXT * (max(lengths) // 10), add_special=True)
    times: dict[tuple[int, int], list[float]] = {(c, n): [] for c in CHUNKS for n in lengths}
    for r in range(args.rounds):
        order = CHUNKS if r % 2 == 0 else CHUNKS[::-1]
        for chunk in order:
            for n in lengths:
                times[chunk, n].append(prefill_s(engines[chunk], words[:n], clock))
    for engine in engines.values():
        engine.close()
    what = "CPU seconds" if args.cpu_time else "seconds"
    print(f"prefill of a cold prompt, exact mode, {args.threads} threads, {what}, median of "
          f"{args.rounds} rounds")  # fmt: skip
    print("| chunk | " + " | ".join(f"{n} tokens: s (tok/s)" for n in lengths) + " |")
    print("|--:|" + "--:|" * len(lengths))
    for chunk in CHUNKS:
        cells = []
        for n in lengths:
            median = statistics.median(times[chunk, n])
            cells.append(f"{median:.2f} ({n / median:.0f})")
        print(f"| {chunk} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

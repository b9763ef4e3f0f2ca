"""What the exact mode's two row rules cost, and what they buy, in process.

`python -m bench.exact_rows [--rounds 6] [--threads 2] [--tokens 160]` loads the bundled
model into the real engine (`--batch-invariant`) and measures, in alternating order:

- **a stand-in beside a lone stream** (4 slots): one greedy stream after a prompt of about
  300 tokens (past 256 cells, where llama.cpp's attention over 512 cells splits a lone row
  per thread), alone with the stand-in (`LlamaEngine._beside_lone`, the worker) and without;
  its median decode tokens/s each way, and whether its logprobs equal those it gets beside
  a companion in the next slot;
- **the tiled K-quant matmul off** (8 slots, each setting in a process of its own, since
  ggml reads `GGML_CPU_TILED_MM` once): the same stream beside seven others (8 rows a step),
  all 8 streams' decode tokens/s with the tiled matmul off (the worker) and on, and whether
  the stream's logprobs equal those it gets alone, and a cold prompt of about 930 tokens
  to its first token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine import llama as llama_engine
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

TEXT = (
    "The lighthouse keeper wrote the weather into the log, as he did every evening: wind "
    "from the south-west, a falling glass, a heavy swell running in from the open sea. "
)
# Plain decode steps, the ones the two rules are about: no n-gram drafts.
SAMPLING = SamplingParams(temperature=0, logprobs=0, ignore_eos=True, draft_max=0)


def load(slots: int, threads: int) -> LlamaEngine:
    settings = Settings(
        backend="cpu", ctx_size=1024 * slots, slots=slots, threads=threads, batch_invariant=True
    )
    return LlamaEngine.load(bundled_model_path(), settings, "bench")


def run(engine: LlamaEngine, tokens: int, companions: int) -> tuple[float, Any]:
    """Decode tokens/s of all streams after their first token, with the stream in the last
    slot beside `companions` in the slots before it, and that stream's logprobs."""
    main = companions
    engine.admit(main, engine.tokenize(TEXT * 8, add_special=True), SAMPLING)
    for slot in range(companions):
        engine.admit(slot, engine.tokenize(f"Ship {slot} sails to", add_special=True), SAMPLING)
    logprobs: list[Any] = []
    decoded, started = 0, 0.0
    while len(logprobs) < tokens:
        outputs = engine.step()
        if started:
            decoded += len(outputs)
        logprobs += [output.logprobs for output in outputs if output.seq_id == main]
        started = started or (time.perf_counter() if logprobs else 0.0)
    took = time.perf_counter() - started
    for slot in range(companions + 1):
        engine.cancel(slot)
    return decoded / took, logprobs[:tokens]


def stand_in(rounds: int, threads: int, tokens: int) -> dict[bool, tuple[float, bool]]:
    """Lone stream tokens/s with and without the stand-in, and whether its logprobs equal
    those beside a companion."""
    engine = load(4, threads)
    with_stand_in = LlamaEngine._beside_lone
    _, in_company = run(engine, tokens, companions=1)
    rates: dict[bool, list[float]] = {True: [], False: []}
    same = {True: True, False: True}
    for round_index in range(rounds):
        for on in (True, False) if round_index % 2 == 0 else (False, True):
            beside = with_stand_in if on else lambda self, seq: None
            LlamaEngine._beside_lone = beside  # type: ignore[method-assign]
            try:
                rate, logprobs = run(engine, tokens, companions=0)
            finally:
                LlamaEngine._beside_lone = with_stand_in  # type: ignore[method-assign]
            rates[on].append(rate)
            same[on] &= logprobs == in_company
    engine.close()
    return {on: (statistics.median(rates[on]), same[on]) for on in rates}


def prefill(engine: LlamaEngine) -> float:
    """Tokens/s of a cold prompt of about 930 tokens to its first token (64-token chunks)."""
    prompt = engine.tokenize(f"Cold. {TEXT * 25}", add_special=True)
    started = time.perf_counter()
    engine.admit(0, prompt, SAMPLING)
    while not engine.step():
        pass
    took = time.perf_counter() - started
    engine.cancel(0)
    engine.admit(0, prompt[-1:], SAMPLING)  # drops the slot's cache
    engine.cancel(0)
    return len(prompt) / took


def eight(threads: int, tokens: int) -> None:
    """(In a child process, GGML_CPU_TILED_MM as the parent set it.) Prints 8 streams'
    tokens/s, whether the eighth's logprobs equal its own alone, and a cold prompt's
    tokens/s, as JSON."""
    llama_engine.TILED_MATMUL = "BENCH_UNUSED"  # the engine leaves the caller's setting be
    engine = load(8, threads)
    cold = prefill(engine)
    _, alone = run(engine, tokens, companions=0)
    rate, beside = run(engine, tokens, companions=7)
    engine.close()
    print(json.dumps({"rate": rate, "same": beside == alone, "prefill": cold}))


def tiled(rounds: int, threads: int, tokens: int) -> dict[bool, tuple[float, bool, float]]:
    """8 streams' tokens/s with the tiled matmul on and off, each in its own process, and a
    cold prompt's."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    prefills: dict[bool, list[float]] = {True: [], False: []}
    same = {True: True, False: True}
    for round_index in range(rounds):
        for on in (False, True) if round_index % 2 == 0 else (True, False):
            env = {**os.environ, llama_engine.TILED_MATMUL: "1" if on else "0"}
            command = [sys.executable, "-m", "bench.exact_rows", "--eight"]
            command += ["--threads", str(threads), "--tokens", str(tokens)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rates[on].append(result["rate"])
            prefills[on].append(result["prefill"])
            same[on] &= result["same"]
    medians = {on: (statistics.median(rates[on]), statistics.median(prefills[on])) for on in rates}
    return {on: (medians[on][0], same[on], medians[on][1]) for on in rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--eight", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eight:
        eight(args.threads, args.tokens)
        return
    lone = stand_in(args.rounds, args.threads, args.tokens)
    tiles = tiled(max(args.rounds // 2, 1), args.threads, args.tokens)
    print(f"exact mode, {args.tokens} tokens, {args.threads} threads, medians")
    print("\n| lone stream (4 slots) | decode tokens/s | logprobs as beside a companion |")
    print("|---|--:|---|")
    for on, label in ((True, "with the stand-in (the worker)"), (False, "without")):
        print(f"| {label} | {lone[on][0]:.1f} | {'yes' if lone[on][1] else 'no'} |")
    print(
        "\n| 8 slots | 8 streams: decode tokens/s, all | the eighth's logprobs as alone "
        "| a cold prompt: tokens/s |"
    )
    print("|---|--:|---|--:|")
    for on, label in ((False, "tiled K-quant matmul off (the worker)"), (True, "on")):
        rate, same, cold = tiles[on]
        print(f"| {label} | {rate:.1f} | {'yes' if same else 'no'} | {cold:.0f} |")


if __name__ == "__main__":
    main()

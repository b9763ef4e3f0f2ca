"""What the exact mode's stand-in beside a lone stream costs, and what it buys, in process.

`python -m bench.lone_row [--rounds 6] [--threads 2] [--tokens 160]` loads the bundled model
once into the real engine (`--batch-invariant`, 4 slots, `--ctx-size 4096`) and runs one
greedy stream of `--tokens` after a prompt of about 300 tokens (past 256 cells, where
llama.cpp's attention over 512 cells splits a lone row per thread): alone with the stand-in
(`LlamaEngine._beside_lone`, the worker), alone without it, and beside a companion in the next
slot, in alternating order. It prints the lone stream's median decode tokens/s each way and
whether its logprobs equal those it gets in company.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.messages.inference import SamplingParams

TEXT = (
    "The lighthouse keeper wrote the weather into the log, as he did every evening: wind "
    "from the south-west, a falling glass, a heavy swell running in from the open sea. "
)
SAMPLING = SamplingParams(temperature=0, logprobs=0, ignore_eos=True)


def run(engine: LlamaEngine, prompt: list[int], tokens: int, company: bool) -> tuple[float, Any]:
    """Decode tokens/s of the stream in slot 1 after its first token, and its logprobs."""
    engine.admit(1, prompt, SAMPLING)
    if company:
        engine.admit(0, engine.tokenize("Ship 0 sails to", add_special=True), SAMPLING)
    logprobs: list[Any] = []
    started = 0.0
    while len(logprobs) < tokens:
        for output in engine.step():
            if output.seq_id == 1:
                logprobs.append(output.logprobs)
                started = started or time.perf_counter()
    took = time.perf_counter() - started
    engine.cancel(0)
    engine.cancel(1)
    return (len(logprobs) - 1) / took, logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=160)
    args = parser.parse_args()
    settings = Settings(
        backend="cpu", ctx_size=4096, slots=4, threads=args.threads, batch_invariant=True
    )
    engine = LlamaEngine.load(bundled_model_path(), settings, "bench")
    prompt = engine.tokenize(TEXT * 8, add_special=True)
    with_stand_in = LlamaEngine._beside_lone

    def lone(stand_in: bool) -> tuple[float, Any]:
        LlamaEngine._beside_lone = with_stand_in if stand_in else lambda self, seq: None  # type: ignore[method-assign]
        try:
            return run(engine, prompt, args.tokens, company=False)
        finally:
            LlamaEngine._beside_lone = with_stand_in  # type: ignore[method-assign]

    _, in_company = run(engine, prompt, args.tokens, company=True)
    rates: dict[bool, list[float]] = {True: [], False: []}
    same: dict[bool, bool] = {True: True, False: True}
    for round_index in range(args.rounds):
        for stand_in in (True, False) if round_index % 2 == 0 else (False, True):
            rate, logprobs = lone(stand_in)
            rates[stand_in].append(rate)
            same[stand_in] &= logprobs == in_company
    engine.close()
    print(f"exact mode, {len(prompt)}-token prompt, {args.tokens} tokens, {args.threads} threads")
    print("| lone stream | decode tokens/s (median) | logprobs as in company |")
    print("|---|--:|---|")
    for stand_in, label in ((True, "with the stand-in (the worker)"), (False, "without")):
        median = statistics.median(rates[stand_in])
        print(f"| {label} | {median:.1f} | {'yes' if same[stand_in] else 'no'} |")


if __name__ == "__main__":
    main()

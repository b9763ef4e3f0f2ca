"""Same answer alone or in company: one request alone (twice), then beside three others.

A request with a fixed seed (or greedy) should produce the same text whichever sequences
share its decode steps, as far as llama.cpp's math allows. Two things are counted apart:

- company: the request beside three others vs the same request alone, both with its prompt
  in the slot's cache (the engine keeps each prompt in a decode of its own and the streams
  in another, so this should never differ);
- prompt cache: the request alone with its prompt decoded whole (the first time) vs alone
  with all but its last prompt token taken from the cache. llama.cpp computes one row
  through other kernels than many, so logits differ in the last bits, which can move a
  sampled token (rarely a greedy one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import trio

from bench.bare import model_facts
from bench.common import Machine, prompt_for
from bench.servers import this_worker
from llm_worker_rbee.inspection.bundled import bundled_model_path

TOKENS = 64
TRIALS = 12
COMPANIONS = 3


@dataclass
class CompanyResult:
    trials: int = 0
    # (trial, sampling, characters that matched before the texts parted)
    differing: list[tuple[int, str, int]] = field(default_factory=list)  # company vs alone
    cache_differing: list[tuple[int, str, int]] = field(default_factory=list)  # cached vs not


def _body(index: int, sampling: dict[str, Any], eog: list[int]) -> dict[str, Any]:
    return {
        "prompt": prompt_for(index),
        "max_tokens": TOKENS,
        "logit_bias": {str(token): -100 for token in eog},
        **sampling,
    }


async def _text(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/completions", json=body)
    response.raise_for_status()
    return str(response.json()["choices"][0]["text"])


def _sampling(trial: int) -> tuple[str, dict[str, Any]]:
    if trial % 2 == 0:
        return "greedy", {"temperature": 0}
    return "seeded", {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": trial}


async def run_company(url: str, *, eog: list[int], trials: int = TRIALS) -> CompanyResult:
    result = CompanyResult()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for trial in range(trials):
            name, sampling = _sampling(trial)
            body = _body(100 + trial, sampling, eog)
            fresh = await _text(client, body)
            alone = await _text(client, body)  # its prompt now comes from the cache
            companions = [
                _body(200 + trial * COMPANIONS + k, {"temperature": 0.8}, eog)
                for k in range(COMPANIONS)
            ]
            texts = await _together(client, [body, *companions])
            result.trials += 1
            if texts[0] != alone:
                result.differing.append((trial, name, _parted(alone, texts[0])))
            if fresh != alone:
                result.cache_differing.append((trial, name, _parted(fresh, alone)))
    return result


def _parted(a: str, b: str) -> int:
    """How many leading characters `a` and `b` share."""
    shared = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return next(shared, min(len(a), len(b)))


async def _together(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> list[str]:
    texts = [""] * len(bodies)

    async def one(i: int) -> None:
        texts[i] = await _text(client, bodies[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(bodies)):
            nursery.start_soon(one, i)
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.company [--batch-invariant] [--trials N]`: this check alone, on a
    worker with 4 slots serving the bundled model (a minute or two on 2 cores)."""
    parser = argparse.ArgumentParser(prog="python -m bench.company")
    parser.add_argument("--batch-invariant", action="store_true", help="the exact mode")
    parser.add_argument("--trials", type=int, default=TRIALS)
    args = parser.parse_args(argv)
    model = bundled_model_path()
    machine = Machine(threads=os.cpu_count() or 1, batch_invariant=args.batch_invariant)
    served = this_worker(model, machine, 4)
    try:
        eog = model_facts(model).eog
        result = trio.run(partial(run_company, served.url, eog=eog, trials=args.trials))
    finally:
        served.stop()
    print(
        f"{served.name}: beside three others vs alone, {len(result.differing)} of "
        f"{result.trials} differed {result.differing}; from the cache vs decoded whole, "
        f"{len(result.cache_differing)} of {result.trials} differed {result.cache_differing}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

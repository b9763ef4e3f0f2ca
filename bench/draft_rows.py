"""What a decode step costs by its rows of logits: the figure n-gram drafts are planned by.

`python -m bench.draft_rows [--threads 2] [--rounds 5]` loads the bundled model the way the
worker does (fast mode, 8 slots, drafts allowed), then times one `llama_decode` of R tokens
of one sequence after a 100-token context, for each R, every row asking for logits (as a
stream's token and its draft do) and, beside it, only the last row (as a prompt chunk does):
the difference is the output layer's. Medians over the rounds, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import llama_cpp

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.draft_plan import TOTALS
from llm_worker_rbee.engine.llama import LlamaEngine
from llm_worker_rbee.engine.ngram import DRAFT_ROWS
from llm_worker_rbee.inspection.bundled import bundled_model_path

CONTEXT = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(backend="cpu", ctx_size=8192, slots=8, threads=args.threads)
    engine = LlamaEngine.load(bundled_model_path(), settings, "gemma")
    ctx = engine._ctx
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(rows: int, pos: int, every_row: bool) -> float:
        batch.n_tokens = rows
        for i in range(rows):
            batch.token[i] = 1000 + i
            batch.pos[i] = pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = every_row or i == rows - 1
        started = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("a decode failed")
        return time.perf_counter() - started

    try:
        decode(CONTEXT, 0, False)
        print("| rows | every row's logits, ms | last row's only, ms |")
        print("|--:|--:|--:|")
        for rows in (t for t in TOTALS if t <= settings.slots + DRAFT_ROWS):
            cells = []
            for every_row in (True, False):
                times = []
                for _ in range(args.rounds):
                    times.append(decode(rows, CONTEXT, every_row))
                    llama_cpp.llama_memory_seq_rm(memory, 0, CONTEXT, -1)
                cells.append(f"{statistics.median(times) * 1000:.1f}")
            print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)
    finally:
        llama_cpp.llama_batch_free(batch)
        engine.close()


if __name__ == "__main__":
    main()

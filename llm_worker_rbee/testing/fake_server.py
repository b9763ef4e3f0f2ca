"""`python -m llm_worker_rbee.testing.fake_server`: the real worker (actors, HTTP, SSE) on
the scripted fake engine, on a real port. For fuzzing and soak runs that must not wait on
a model; never part of the documented serving surface."""

from __future__ import annotations

import argparse
import sys

import trio

from llm_worker_rbee.config import Settings
from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
from llm_worker_rbee.logs import configure_logging
from llm_worker_rbee.pipeline.runner import VirtualTimeStepRunner
from llm_worker_rbee.worker import Runtime, run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_worker_rbee.testing.fake_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--step-latency", type=float, default=0.005)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("info", "text")
    script = FakeScript(
        reply=[f" w{i % 7}" for i in range(args.reply_tokens)],
        step_latency=args.step_latency,
        n_slots=args.slots,
        n_ctx=args.slots * 256,
    )
    settings = Settings(
        worker_id="fake-server",
        port=args.port,
        slots=args.slots,
        ctx_size=script.n_ctx,
        max_queue=args.max_queue,
        drain_timeout=args.drain_timeout,
        threads=1,
    )
    engine = FakeEngine(script)
    # The fake engine's steps sleep `step_latency` of real time here (no MockClock).
    runtime = Runtime(runner=VirtualTimeStepRunner(args.step_latency))
    return trio.run(
        lambda: run_worker(
            settings, model_id="fake-model", engine_factory=lambda: engine, runtime=runtime
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())

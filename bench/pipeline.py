"""Pipeline overhead: this worker on the scripted fake engine with zero step latency.

Every token still goes through the engine thread's output step (UTF-8 decoding, stop
strings), a request's mailbox, the HTTP handler and SSE framing, so
streamed tokens/s here is what the Python side can carry when the engine (a GPU) is never
the bottleneck.

`python -m bench.pipeline --port 0 --slots 64 --tokens 512` serves; `run_pipeline` drives it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from bench.servers import Served

STREAMS = 64
TOKENS = 512


@dataclass(frozen=True)
class PipelineResult:
    streams: int
    tokens: int
    wall_s: float
    complete: int

    @property
    def tps(self) -> float:
        return self.tokens / self.wall_s


def serve(port: int, slots: int, tokens: int, step_seconds: float = 0.0) -> int:
    """Serves the fake engine; each step sleeps `step_seconds` of real time first (a decode's
    time, for bench/wakeups.py)."""
    from llm_worker_rbee.config import Settings
    from llm_worker_rbee.engine.base import SeqOutput
    from llm_worker_rbee.engine.fake import FakeEngine, FakeScript
    from llm_worker_rbee.pipeline.runner import ThreadStepRunner
    from llm_worker_rbee.worker import Runtime, run_worker

    class SpacedEngine(FakeEngine):
        def step(self) -> list[SeqOutput]:
            time.sleep(step_seconds)
            return super().step()

    logging.basicConfig(level="INFO", format="%(message)s", stream=sys.stderr)
    script = FakeScript(
        reply=[f" t{i % 10}" for i in range(tokens)],
        step_latency=0.0,
        n_slots=slots,
        n_ctx=slots * (tokens + 256),
    )
    settings = Settings(port=port, slots=slots, ctx_size=script.n_ctx, threads=1)
    engine = SpacedEngine(script) if step_seconds > 0 else FakeEngine(script)
    return trio.run(
        lambda: run_worker(
            settings,
            model_id="fake-model",
            engine_factory=lambda: engine,
            # As in production: the engine steps on its own thread.
            runtime=Runtime(runner=ThreadStepRunner()),
        )
    )


def start_fake_worker(
    slots: int = STREAMS, tokens: int = TOKENS, step_seconds: float = 0.0, tree: Path | None = None
) -> Served:
    """`tree`: another checkout to serve from (its package and its bench), not this one."""
    command = [sys.executable, "-m", "bench.pipeline", "--slots", str(slots)]
    command += ["--tokens", str(tokens), "--step-seconds", str(step_seconds)]
    served = Served("llm-worker-rbee (fake engine)", command, re.compile(r"ready: "), cwd=tree)
    served.start()
    listening = re.compile(r"listening on (http://\S+)")
    served.url = next(m.group(1) for line in served.lines if (m := listening.search(line)))
    return served


async def _stream(client: httpx.AsyncClient, index: int, tokens: int) -> int:
    """Streams one completion; returns completion_tokens from the usage chunk."""
    body = {
        "prompt": f"stream {index}",
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tail = b""
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        # Raw bytes, no per-line parsing: the client must not be the bottleneck.
        async for chunk in response.aiter_raw():
            tail = (tail + chunk)[-4096:]
    usage = re.findall(rb'"completion_tokens":\s*(\d+)', tail)
    return int(usage[-1]) if usage else 0


async def run_pipeline(url: str, streams: int = STREAMS, tokens: int = TOKENS) -> PipelineResult:
    counts: list[int] = []
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await _stream(client, -1, 8)  # warm-up

        async def one(index: int) -> None:
            counts.append(await _stream(client, index, tokens))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(one, index)
        wall = time.perf_counter() - started
    return PipelineResult(streams, sum(counts), wall, sum(c == tokens for c in counts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slots", type=int, default=STREAMS)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    args = parser.parse_args()
    return serve(args.port, args.slots, args.tokens, args.step_seconds)


if __name__ == "__main__":
    sys.exit(main())

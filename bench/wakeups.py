"""What one streamed token costs the event-loop thread, and how much of it is the framework.

`python -m bench.wakeups` streams single requests, one at a time, from two servers whose
producer waits a fixed time between tokens, as a real engine does:

- this worker on the scripted fake engine, on its engine thread (`ThreadStepRunner`), each
  step sleeping `spacing` seconds: every token goes engine thread -> mailbox -> HTTP
  handler -> SSE frame -> socket, as with the real model;
- the framework floor: a quart-trio app on hypercorn whose body generator sleeps `spacing`
  seconds and yields one SSE frame of the same size, nothing else.

For each spacing it prints the CPU time the server's event-loop thread spent per token
(`/proc/PID/task/PID/stat`, the main thread). On a 2-core machine that time is taken from
llama.cpp's threads, which wait for each other at every barrier of a decode, so it is what
the per-token path costs the tokens/s beside llama-server (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence

import httpx
import trio

from bench.machine import main_thread_cpu_s
from bench.pipeline import start_fake_worker
from bench.servers import Served, free_port

TOKENS = 300
REQUESTS = 4
SPACINGS = (0.0, 0.0005, 0.005, 0.025)


def _serve_floor(spacing: float, port: int) -> int:
    # Imported here: only the server's process needs them, the measuring one stays light.
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart_trio import QuartTrio

    app = QuartTrio(__name__)

    @app.post("/v1/completions")
    async def completions() -> tuple[AsyncIterator[bytes], int, dict[str, str]]:
        async def frames() -> AsyncIterator[bytes]:
            for i in range(TOKENS):
                await trio.sleep(spacing)
                chunk = {"id": "cmpl-0", "object": "text_completion", "created": 0,
                         "model": "fake-model", "choices": [{"index": 0, "text": f" t{i % 10}",
                         "logprobs": None, "finish_reason": None}]}  # fmt: skip
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return frames(), 200, {"Content-Type": "text/event-stream"}

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    trio.run(serve, app, config)
    return 0


async def cpu_per_token(url: str, pid: int) -> float:
    """Seconds of the event loop's CPU per streamed token, over REQUESTS requests in turn."""
    body = {"prompt": "one", "max_tokens": TOKENS, "stream": True}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def stream() -> None:
            async with client.stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                async for _ in response.aiter_raw():
                    pass

        await stream()  # warm-up
        before = main_thread_cpu_s(pid)
        for _ in range(REQUESTS):
            await stream()
        return (main_thread_cpu_s(pid) - before) / (REQUESTS * TOKENS)


def _measure(kind: str, spacing: float) -> float:
    if kind == "worker":
        served = start_fake_worker(slots=4, tokens=TOKENS, step_seconds=spacing)
    else:
        port = free_port()
        command = [sys.executable, "-m", "bench.wakeups", "--serve-floor", str(spacing)]
        served = Served(kind, [*command, "--port", str(port)], re.compile(r"listening on"))
        served.start()
        served.url = f"http://127.0.0.1:{port}"
    try:
        assert served.proc is not None
        return trio.run(cpu_per_token, served.url, served.proc.pid)
    finally:
        served.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__)
    parser.add_argument("--serve-floor", type=float, metavar="SPACING", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor is not None:
        return _serve_floor(args.serve_floor, args.port)
    print(f"\n## event-loop CPU per streamed token, {os.cpu_count()} cores, 1 stream\n")
    print("| time between tokens | this worker (fake engine) | quart-trio + hypercorn alone |")
    print("|--:|--:|--:|")
    for spacing in SPACINGS:
        worker = _measure("worker", spacing)
        floor = _measure("floor", spacing)
        print(f"| {spacing * 1000:g} ms | {worker * 1e6:.0f} µs | {floor * 1e6:.0f} µs |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

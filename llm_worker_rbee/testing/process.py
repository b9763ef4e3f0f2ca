"""A real worker in a subprocess on a free loopback port, for end-to-end tests and benches."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

_LISTENING = re.compile(r"listening on (http://\S+)")
_READY = re.compile(r"ready: ")


@dataclass
class WorkerProcess:
    """`llm-worker-rbee serve --port 0 ...`, its URL, and everything it logged."""

    args: Sequence[str]
    env: dict[str, str] | None = None
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _listening: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llm_worker_rbee", "serve", "--port", "0", *self.args]

    def start(self, *, wait_ready: bool = True, timeout: float = 120.0) -> WorkerProcess:
        command = self.command()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(self.env or {})},
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        event = self._ready if wait_ready else self._listening
        started = event.wait(timeout)
        if not started or not self.url or (wait_ready and self.proc.poll() is not None):
            self.stop()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines[-40:]))
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.url = match.group(1)
                self._listening.set()
            if _READY.search(line):
                self._ready.set()
        self.proc.stderr.close()
        # The process ended: unblock anyone waiting for a start that will never come.
        self._listening.set()
        self._ready.set()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(5)

    def log(self) -> str:
        return "".join(self.lines)


class FakeWorkerProcess(WorkerProcess):
    """The worker on the fake engine (llm_worker_rbee.testing.fake_server), real HTTP."""

    def __init__(self, args: Sequence[str] = ("--step-latency", "0")) -> None:
        super().__init__(list(args))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llm_worker_rbee.testing.fake_server", *self.args]

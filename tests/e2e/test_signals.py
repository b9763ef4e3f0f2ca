"""The worker process and signals, with the real model."""

from __future__ import annotations

import signal

import httpx
import pytest

from llm_worker_rbee.testing.process import WorkerProcess, timed_exit

pytestmark = pytest.mark.real_model


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.behavior("CFG-016", "LIFE-007")
def test_signal_while_idle_exits_0_within_2_s(signum: int) -> None:
    worker = WorkerProcess(["--slots", "1", "--ctx-size", "512"]).start()
    try:
        assert httpx.get(f"{worker.url}/health").status_code == 200
        code, seconds = timed_exit(worker, signum, timeout=10)
    finally:
        worker.stop()
    assert code == 0, worker.log()
    assert seconds < 2.0
    assert "draining" in worker.log() and "Traceback" not in worker.log()


@pytest.mark.behavior("CFG-002")
def test_bad_flag_exits_2_with_one_line() -> None:
    worker = WorkerProcess(["--slots", "zero"])
    with pytest.raises(RuntimeError):
        worker.start(timeout=30)
    assert worker.wait(10) == 2
    assert worker.lines == [
        "llm-worker-rbee: error: --slots: Input should be a valid integer, "
        "unable to parse string as an integer (got 'zero')\n"
    ]

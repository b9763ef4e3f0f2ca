"""The worker process and signals, with the real model."""

from __future__ import annotations

import signal

import httpx
import pytest

from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = pytest.mark.real_model


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.behavior("CFG-016", "LIFE-007")
def test_signal_while_idle_drains_and_exits_0(signum: int) -> None:
    """The exit code and the way down; how long it takes is not timed here (the 10 s are a
    guard against a hang): scenarios/sigterm_under_full_load.toml pins the order in virtual
    time."""
    worker = WorkerProcess(["--slots", "1", "--ctx-size", "512"]).start()
    try:
        assert httpx.get(f"{worker.url}/health").status_code == 200
        worker.signal(signum)
        code = worker.wait(10)
    finally:
        worker.stop()
    assert code == 0, worker.log()
    log = worker.log()
    assert "draining" in log and "stopped (" in log and "Traceback" not in log


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

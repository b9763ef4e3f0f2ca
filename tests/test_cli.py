"""The command line's own subcommands: --version, bench."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from llm_worker_rbee import __version__, cli

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.mark.behavior("CFG-017")
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"llm-worker-rbee {__version__}\n"


@pytest.mark.behavior("CFG-019")
def test_bench_runs_the_checkouts_benchmarks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[list[str], Any]] = []

    def call(command: list[str], cwd: Any = None) -> int:
        calls.append((command, cwd))
        return 7

    import subprocess

    monkeypatch.setattr(subprocess, "call", call)
    assert cli.main(["bench", "--quick"]) == 7
    assert calls == [([sys.executable, "-m", "bench", "--quick"], SCENARIOS.parent)]
    # An installed package has no benchmarks beside it: one line, exit 2.
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "llm_worker_rbee" / "cli.py"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "llm-worker-rbee: error: bench: the benchmarks live in a source checkout; "
        f"no bench/ in {tmp_path}\n"
    )

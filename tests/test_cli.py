"""The command line's own subcommands: --version, scenario run, bench."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_worker_rbee import __version__, cli

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture
def root_log_level() -> Iterator[None]:
    """`scenario run` silences the root logger for its run; other tests need it back."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


@pytest.mark.behavior("CFG-017")
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"llm-worker-rbee {__version__}\n"


@pytest.mark.behavior("CFG-018")
def test_scenario_run_prints_a_table_and_writes_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root_log_level: None
) -> None:
    failing = tmp_path / "wrong_status.toml"
    failing.write_text(
        'description = "expects the impossible"\n'
        '[[request]]\nid = "a"\nbody = { prompt = "hi", max_tokens = 1 }\n'
        "[expect.requests.a]\nstatus = 500\n"
    )
    trace = tmp_path / "trace.jsonl"
    passing = SCENARIOS / "basic_stream.toml"
    code = cli.main(["scenario", "run", str(passing), str(failing), "--trace", str(trace)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].split() == ["scenario", "result", "requests", "virtual_s", "wall_ms"]
    assert out[1].split()[:3] == ["basic_stream.toml", "PASS", "1"]
    assert out[2].split()[:2] == ["wrong_status.toml", "FAIL"]
    assert out[3].strip() == "request 'a': expected status=500, got 200 (ended at t=0.125)"
    assert out[-1] == "1 passed, 1 failed"
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0] == {"scenario": "basic_stream.toml"}
    assert {"scenario": "wrong_status.toml"} in lines
    assert any(line.get("type") == "Admit" for line in lines)


@pytest.mark.behavior("CFG-018")
def test_scenario_run_without_files_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root_log_level: None
) -> None:
    assert cli.main(["scenario", "run", str(tmp_path)]) == 2
    assert capsys.readouterr().out == f"no scenario files found in {tmp_path}\n"


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

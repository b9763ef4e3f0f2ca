"""The command line's own subcommands: --version, bench."""

from __future__ import annotations

import subprocess
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


@pytest.mark.behavior("CFG-037")
def test_a_chat_template_file_that_cannot_be_used_exits_2_in_one_line(tmp_path: Path) -> None:
    """Refused at start, before the model is looked at: a bad flag value, exit 2."""
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}{{ message.content }}")
    for path, says in ((broken, "line 1: Unexpected end of template"), (tmp_path, "cannot read")):
        result = subprocess.run(
            [sys.executable, "-m", "llm_worker_rbee", "serve", "--chat-template-file", str(path)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"llm-worker-rbee: error: --chat-template-file {path}: ")
        assert says in line

"""The scenario harness itself (devtools/scenarios): deterministic traces, failures that say
what and when, and its command line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.scenarios import cli as scenario_cli
from devtools.scenarios.runner import run_scenario
from devtools.scenarios.spec import scenario_paths
from llm_worker_rbee.actors.session import InferenceSession

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
RUNS = 4


def test_there_are_at_least_25_scenarios() -> None:
    assert len(scenario_paths([SCENARIOS])) >= 25


@pytest.mark.parametrize("path", scenario_paths([SCENARIOS]), ids=lambda p: p.stem)
@pytest.mark.behavior("CFG-018")
@pytest.mark.no_cover  # 4 runs of what the scenarios cover once: only slower under coverage
def test_trace_is_byte_identical_across_runs(path: Path) -> None:
    hashes = {run_scenario(path).trace_hash for _ in range(RUNS)}
    assert len(hashes) == 1


def test_trace_records_the_messages_between_actors() -> None:
    trace = run_scenario(SCENARIOS / "cancel_running.toml").trace
    kinds = [json.loads(line)["type"] for line in trace]
    for kind in ("Acquire", "Granted", "Admit", "TextOutput", "Cancel", "Leave", "Ended"):
        assert kind in kinds


def test_a_slot_leak_fails_a_named_scenario_saying_what_was_expected_when(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def release_nothing(self: InferenceSession) -> None:
        """The bug: a session that never gives its slot and sequence back."""

    monkeypatch.setattr(InferenceSession, "_release", release_nothing)
    outcome = run_scenario(SCENARIOS / "disconnect_mid_stream.toml")
    assert not outcome.passed
    assert "at t=1.000: expected slots_busy=0, got 1" in outcome.failures
    # the next request waits for the leaked slot until the harness gives up
    assert (
        "scenario: still running at its time limit t=600.000 (requests not finished: next)"
        in outcome.failures
    )


@pytest.mark.behavior("SSE-010")
def test_a_missing_final_event_fails_with_the_request_and_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llm_worker_rbee.actors.choice_stream import ChoiceBox

    def drop(box: ChoiceBox, final: object) -> None:
        """The bug: the terminal event is never sent; the session just ends."""
        box.abandon()

    monkeypatch.setattr(ChoiceBox, "finish", drop)
    outcome = run_scenario(SCENARIOS / "cancel_running.toml")
    # the client is told something went wrong instead of being left hanging
    assert "request 'a': expected stop_reason='cancelled', got 'error' (ended at t=0.500)" in (
        outcome.failures
    )


def test_traces_are_the_same_in_another_process() -> None:
    """Not only repeatable in one process: memory addresses and hash seeds differ per process."""
    script = (
        "import hashlib, sys; from pathlib import Path;"
        "from devtools.scenarios.runner import run_scenario;"
        "from devtools.scenarios.spec import scenario_paths;"
        "h = hashlib.sha256();"
        "paths = scenario_paths([Path(sys.argv[1])]);"
        "[h.update(run_scenario(p).trace_hash.encode()) for p in paths];"
        "print(h.hexdigest())"
    )
    hashes = {
        subprocess.run(
            [sys.executable, "-c", script, str(SCENARIOS)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=SCENARIOS.parent,  # the checkout's root: `devtools` is importable there
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(hashes) == 1


@pytest.fixture
def root_log_level() -> Iterator[None]:
    """`run` silences the root logger for its run; other tests need it back."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


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
    code = scenario_cli.main(["run", str(passing), str(failing), "--trace", str(trace)])
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
    assert scenario_cli.main(["run", str(tmp_path)]) == 2
    assert capsys.readouterr().out == f"no scenario files found in {tmp_path}\n"


@pytest.mark.behavior("CFG-018")
def test_the_harness_runs_as_a_module_from_the_checkouts_root(tmp_path: Path) -> None:
    """As docs/SCENARIOS.md says: devtools is not installed, the checkout's root finds it."""
    done = subprocess.run(
        [sys.executable, "-m", "devtools.scenarios", "run", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=SCENARIOS.parent,
    )
    assert (done.returncode, done.stdout) == (2, f"no scenario files found in {tmp_path}\n")

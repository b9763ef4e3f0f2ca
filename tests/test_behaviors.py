"""The behaviour inventory (docs/BEHAVIORS.md) against the code and the tests: the real one
must pass, and each kind of drift must fail with a message that names what drifted."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.behaviors import cli as behaviors_cli
from devtools.behaviors.check import Report, check, code_facts, sync
from devtools.behaviors.facts import Fact, backticked, env_fact, flag_fact, route_fact
from devtools.behaviors.inventory import SECTIONS
from devtools.behaviors.locations import Location, Sources, resolve
from devtools.behaviors.paths import PACKAGE_DIR
from devtools.behaviors.runtime_facts import cli_facts, route_facts, settings_facts, worker_app
from devtools.behaviors.source_facts import environment_facts, error_facts
from llm_worker_rbee import cli
from llm_worker_rbee.config import FLAGS, Settings, _Flag


def problems_text(report: Report) -> str:
    return "\n".join(report.problems)


@pytest.mark.behavior("CFG-020")
def test_the_inventory_matches_the_code_and_the_tests() -> None:
    report = check()
    assert not report.problems, "docs/BEHAVIORS.md and the code disagree:\n" + problems_text(report)
    assert len(report.inventory.behaviors) >= 150


@pytest.mark.behavior("CFG-020")
def test_the_cli_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert behaviors_cli.main(["check"]) == 0
    assert "the code and the inventory agree" in capsys.readouterr().out


@pytest.mark.behavior("CFG-020")
def test_show_prints_current_line_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert behaviors_cli.main(["show", "HTTP-001", "Hive"]) == 0
    out = capsys.readouterr().out.splitlines()
    source = (PACKAGE_DIR / "http" / "system" / "routes.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "async def health" in text)
    health = next(row for row in out if row.startswith("| HTTP-001 |"))
    assert f"llm_worker_rbee/http/system/routes.py:{line} register.health" in health
    assert any(row.startswith("| HIVE-001 |") for row in out)
    assert not any(row.startswith("| HTTP-002 |") for row in out)


@pytest.mark.behavior("CFG-020")
def test_the_checker_runs_as_a_module_from_the_checkouts_root(tmp_path: Path) -> None:
    """As `make test` runs it: devtools is not installed, the checkout's root finds it."""
    done = subprocess.run(
        [sys.executable, "-m", "devtools.behaviors", "sync", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=PACKAGE_DIR.parent,
    )
    assert (done.returncode, done.stderr) == (
        2,
        f"python -m devtools.behaviors: error: no docs/BEHAVIORS.md in {tmp_path}\n",
    )


# A small checkout of its own: an inventory, tests and scenarios in tmp_path.


def inventory(rows: dict[str, list[str]] | None = None, gaps: tuple[str, ...] = ()) -> str:
    """One row per section (`config:Settings`, covered by tests/test_x.py::test_it) unless
    `rows` gives a section its own rows."""
    rows = rows or {}
    parts = ["# Behaviours\n"]
    for title, prefix in SECTIONS.items():
        parts.append(f"\n## {title}\n\n| id | behaviour | where | covered by |\n|---|---|---|---|")
        parts += rows.get(
            title, [f"| {prefix}-001 | It works. | `config:Settings` | tests/test_x.py::test_it |"]
        )
    parts.append("\n## Coverage gaps\n\n| id | what is missing |\n|---|---|")
    parts += [f"| {ident} | nothing covers it |" for ident in gaps]
    return "\n".join(parts) + "\n"


ALL_IDS = ", ".join(f'"{prefix}-001"' for prefix in SECTIONS.values())
TEST = f"""import pytest


@pytest.mark.behavior({ALL_IDS})
def test_it() -> None:
    assert True
"""


def checkout(tmp_path: Path, text: str, test: str = TEST, scenario: str | None = None) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "BEHAVIORS.md").write_text(text)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(test)
    (tmp_path / "scenarios").mkdir()
    if scenario is not None:
        (tmp_path / "scenarios" / "s.toml").write_text(scenario)
    return tmp_path


def no_facts(problems: list[str]) -> list[Fact]:
    return []


def test_a_small_checkout_that_agrees_passes(tmp_path: Path) -> None:
    report = check(checkout(tmp_path, inventory()), facts=no_facts)
    assert report.problems == []


def test_a_behaviour_without_a_test_fails_naming_it(tmp_path: Path) -> None:
    row = "| HTTP-002 | A new behaviour nobody tests. | `http.app:create_app` | |"
    rows = {
        "HTTP API": [
            "| HTTP-001 | It works. | `config:Settings` | tests/test_x.py::test_it |",
            row,
        ]
    }
    report = check(checkout(tmp_path, inventory(rows)), facts=no_facts)
    assert report.problems == [
        "HTTP-002: no test or scenario covers it (A new behaviour nobody tests.); add "
        '@pytest.mark.behavior("HTTP-002") to a test that checks it'
    ]


def test_a_test_naming_an_unknown_behaviour_fails_naming_both(tmp_path: Path) -> None:
    test = TEST + '\n\n@pytest.mark.behavior("HTTP-404")\ndef test_other() -> None:\n    pass\n'
    report = check(checkout(tmp_path, inventory(), test), facts=no_facts)
    assert report.problems == [
        "tests/test_x.py:10: tests/test_x.py::test_other names unknown behaviour HTTP-404"
    ]


def test_a_scenario_naming_an_unknown_behaviour_fails(tmp_path: Path) -> None:
    scenario = 'description = "x"\ncovers = ["HIVE-001", "HIVE-999"]\n'
    report = check(checkout(tmp_path, inventory(), TEST, scenario), facts=no_facts)
    assert "scenarios/s.toml: scenarios/s.toml names unknown behaviour HIVE-999" in report.problems


def test_a_where_that_no_longer_exists_fails_naming_it(tmp_path: Path) -> None:
    rows = {
        "HTTP API": [
            "| HTTP-001 | It works. | `http.app:create_app.gone`, `http.nowhere:f`, `config` "
            "| tests/test_x.py::test_it |"
        ]
    }
    report = check(checkout(tmp_path, inventory(rows)), facts=no_facts)
    assert report.problems == [
        "HTTP-001: where `http.app:create_app.gone`: no 'gone' in llm_worker_rbee/http/app.py",
        "HTTP-001: where `http.nowhere:f`: there is no module llm_worker_rbee.http.nowhere",
        "HTTP-001: where `config` is not module:function",
    ]


def test_where_reaches_handlers_methods_and_tables() -> None:
    sources = Sources(PACKAGE_DIR)
    for ref in (
        "http.system.routes:register.health",
        "actors.session:SessionPool.cancel",
        "llm_worker_rbee.http.schemas:REFUSED",
        "config:Settings.queue_wait_s",
        "devtools.behaviors.check:check",  # a development tool, beside the package
    ):
        assert isinstance(resolve(ref, sources), Location), ref
    assert resolve("devtools.nowhere:f", sources) == (
        "`devtools.nowhere:f`: there is no module devtools.nowhere"
    )


def test_a_covered_by_column_that_drifted_fails_and_sync_rewrites_it(tmp_path: Path) -> None:
    rows = {"Hive": ["| HIVE-001 | It works. | `config:Settings` | tests/test_x.py::test_old |"]}
    root = checkout(tmp_path, inventory(rows))
    report = check(root, facts=no_facts)
    assert report.problems == [
        "HIVE-001: the table says covered by tests/test_x.py::test_old; the tests say "
        "tests/test_x.py::test_it (run `python -m devtools.behaviors sync`)"
    ]
    assert behaviors_cli.main(["sync", "--root", str(root)]) == 0
    assert check(root, facts=no_facts).problems == []


@pytest.mark.behavior("CFG-020")
def test_sync_rewrites_the_covered_by_column(tmp_path: Path) -> None:
    test = TEST.replace('"OAI-001"', '"OAI-001", "LIFE-001"').replace('"ERR-001", ', "")
    rows = {"Hive": ["| HIVE-001 | It works. | `config:Settings` | |"]}
    scenario = 'description = "x"\ncovers = ["HIVE-001"]\n'
    root = checkout(tmp_path, inventory(rows), test, scenario)
    text, changed = sync(root)
    assert changed == 2  # HIVE-001 gains its test and scenario, ERR-001 loses its test
    assert (
        "| HIVE-001 | It works. | `config:Settings` | tests/test_x.py::test_it, scenarios/s.toml |"
        in text
    )
    assert "| ERR-001 | It works. | `config:Settings` |  |" in text
    # the uncovered behaviour is listed as a gap, which the check refuses
    assert text.endswith("|---|---|\n| ERR-001 | no test or scenario declares it |\n")
    (root / "docs" / "BEHAVIORS.md").write_text(text)
    problems = check(root, facts=no_facts).problems
    assert "Coverage gaps: lists ERR-001; every behaviour needs a covering test" in problems


def test_malformed_rows_and_markers_are_named(tmp_path: Path) -> None:
    rows = {
        "HTTP API": [
            "| HTTP-001 | It works. | `config:Settings` | tests/test_x.py::test_it |",
            "| HTTP-001 | Twice. | `config:Settings` | tests/test_x.py::test_it |",
            "| LOAD-002 | Wrong section. | `config:Settings` | |",
            "| HTTP-003 | Three cells. | |",
        ]
    }
    test = (
        TEST
        + "\n\nIDS = ['HTTP-001']\n\n@pytest.mark.behavior(*IDS)\ndef test_y() -> None:\n    pass\n"
    )
    report = check(checkout(tmp_path, inventory(rows), test), facts=no_facts)
    text = problems_text(report)
    assert "is also the id at line" in text
    assert "id 'LOAD-002' should be HTTP-NNN in section 'HTTP API'" in text
    assert "a row needs 4 cells" in text
    assert "tests/test_x.py:12: pytest.mark.behavior takes string ids only" in text


def test_a_missing_inventory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    assert check(tmp_path).problems == [
        f"{tmp_path}/docs/BEHAVIORS.md: no inventory (a source checkout?)"
    ]


# What the code has, against the real inventory: a new one without a row fails by name.


def drift(facts: list[Fact]) -> list[str]:
    return check(facts=lambda problems: facts).problems


def test_a_new_route_without_a_row_fails_naming_it() -> None:
    app = worker_app()

    @app.get("/v1/brand-new")
    async def brand_new() -> str:
        return "new"

    assert drift(route_facts(app)) == [
        "route GET /v1/brand-new (http.app:create_app) appears in no behaviour: add a row "
        "naming it to docs/BEHAVIORS.md"
    ]


def test_a_new_setting_and_flag_without_a_row_fail_naming_them() -> None:
    class Wider(Settings):
        turbo: bool = False

    flags = (*FLAGS, _Flag("turbo", "go faster", switch=True))
    problems = drift(settings_facts(Wider, flags))
    assert problems == [
        "flag --turbo (config:Settings.turbo) appears in no behaviour: add a row naming it to "
        "docs/BEHAVIORS.md",
        "environment variable LLM_WORKER_TURBO (config:Settings.turbo) appears in no "
        "behaviour: add a row naming it to docs/BEHAVIORS.md",
    ]


def test_a_new_subcommand_flag_without_a_row_fails_naming_it() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands.choices["inspect-model"].add_argument("--fast", action="store_true")
    problems = drift(cli_facts(parser))
    assert problems == [
        "flag --fast (cli:inspect-model) appears in no behaviour (with `llm-worker-rbee "
        "inspect-model`): add a row naming it to docs/BEHAVIORS.md"
    ]


def test_new_error_codes_and_variables_without_a_row_fail_naming_them(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text(
        "import os\n"
        "from llm_worker_rbee.http.errors import ApiError, bad_request\n"
        "from llm_worker_rbee.messages.session import ErrorInfo\n"
        "WHERE = 'LLM_WORKER_SOMEWHERE'\n"
        "def f(code: str, status: int) -> None:\n"
        "    os.environ.get(WHERE)\n"
        "    ErrorInfo(503, 'unavailable', code, 'passed on')\n"  # a parameter: passed on
        "    raise ApiError(400, 'x', type='quirk_error', code='brand_new')\n"
        "def g(info: ErrorInfo) -> None:\n"
        "    raise bad_request('y', code=f'made_{info.code}')\n"
    )
    problems: list[str] = []
    facts = error_facts(tmp_path, problems) + environment_facts(tmp_path)
    assert problems[0] == (
        f"{tmp_path}/new.py:10 (new:g): an error code computed at run time; list its values "
        "in source_facts._computed_errors"
    )
    assert [p for p in drift(facts) if "appears in no behaviour" in p] == [
        "error code brand_new (new:f) appears in no behaviour: add a row naming it to "
        "docs/BEHAVIORS.md",
        "error type quirk_error (new:f) appears in no behaviour: add a row naming it to "
        "docs/BEHAVIORS.md",
        "environment variable LLM_WORKER_SOMEWHERE (new:f) appears in no behaviour: add a row "
        "naming it to docs/BEHAVIORS.md",
    ]


def test_the_code_facts_include_what_clients_see() -> None:
    problems: list[str] = []
    names = {(f.kind, f.name) for f in code_facts(problems=problems)}
    assert problems == []
    for fact in (
        ("route", "DELETE /v1/inference/{job_id}"),
        ("route", "WS /v1/workers/ws"),
        ("flag", "--ctx-size"),
        ("environment variable", "LLM_WORKER_CTX_SIZE"),
        ("environment variable", "LLORCH_API_TOKEN"),
        ("environment variable", "CUDA_VISIBLE_DEVICES"),
        ("error code", "all_slots_busy"),
        ("error code", "worker_draining"),
        ("error type", "overloaded"),
        ("stop reason", "stop_sequence"),
        ("OpenAI finish_reason", "length"),
        ("SSE event", "failed"),
        ("hive payload field", "hive_last_success"),
        ("request field", "max_completion_tokens"),
        ("metric", "llm_worker:request_queue_time_seconds"),
        ("subcommand", "llm-worker-rbee inspect-model"),
    ):
        assert fact in names, fact
    assert ("error code", "worker_ready") not in names  # a ready worker serves


def test_facts_match_whole_names_only() -> None:
    flag = flag_fact("--port", "x")
    assert flag.found_in(["`--port` 8080"]) and not flag.found_in(["--port-range"])
    route = route_fact("GET /v1/models", "x")
    assert route.found_in(["`GET /v1/models` lists"]) and not route.found_in(["GET /v1/models/x"])
    code = backticked("error code", "timeout", "x")
    assert code.found_in(["type `timeout`"]) and not code.found_in(["a timeout"])
    scoped = flag_fact("--json", "x", "llm-worker-rbee inspect-model")
    assert not scoped.found_in(["`--json` output"])
    assert scoped.found_in(["llm-worker-rbee inspect-model [--json]"])
    assert re.search(env_fact("LLM_WORKER_PORT", "x").pattern, "LLM_WORKER_PORTS") is None

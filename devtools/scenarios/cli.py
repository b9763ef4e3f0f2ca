"""`python -m devtools.scenarios run [PATH...] [--trace FILE]`: a pass/fail table (it was
`llm-worker-rbee scenario run` while the harness shipped in the package)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from devtools.scenarios.runner import Outcome, run_scenario
from devtools.scenarios.spec import scenario_paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.scenarios",
        description="run deterministic scenarios in virtual time",
    )
    actions = parser.add_subparsers(dest="scenario_command", required=True)
    run = actions.add_parser("run", help="run scenario files (default: scenarios/)")
    run.add_argument("paths", nargs="*", type=Path, default=[Path("scenarios")])
    run.add_argument("--trace", type=Path, help="write the recorded messages as JSON lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_scenarios(args.paths, args.trace)


def run_scenarios(paths: list[Path], trace: Path | None) -> int:
    # Scenarios provoke errors on purpose; their outcomes are checked, not logged.
    logging.getLogger().setLevel(logging.CRITICAL)
    files = scenario_paths(paths)
    if not files:
        print("no scenario files found in " + ", ".join(map(str, paths)))
        return 2
    outcomes: list[Outcome] = []
    width = max(len(f.name) for f in files)
    print(f"{'scenario':<{width}}  result  requests  virtual_s  wall_ms")
    for file in files:
        outcome = run_scenario(file)
        outcomes.append(outcome)
        result = "PASS" if outcome.passed else "FAIL"
        print(
            f"{outcome.name:<{width}}  {result:<6}  {outcome.requests:>8}  "
            f"{outcome.virtual_s:>9.3f}  {outcome.wall_ms:>7.0f}"
        )
        for failure in outcome.failures:
            print(f"    {failure}")
    if trace is not None:
        with trace.open("w", encoding="utf-8") as out:
            for outcome in outcomes:
                out.write(json.dumps({"scenario": outcome.name}) + "\n")
                out.writelines(line + "\n" for line in outcome.trace)
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed")
    return 1 if failed else 0

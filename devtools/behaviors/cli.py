"""`python -m devtools.behaviors check|show|sync [--root DIR]`: the inventory's command line
(it was `llm-worker-rbee behaviors ...` while the checker shipped in the package)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.behaviors.check import check, show, sync
from devtools.behaviors.paths import INVENTORY, SOURCE_ROOT

PROG = "python -m devtools.behaviors"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="the behaviour inventory, docs/BEHAVIORS.md (source checkout)"
    )
    actions = parser.add_subparsers(dest="behaviors_command", required=True)
    for name, text in (
        ("check", "fail on an uncovered, unknown or missing behaviour"),
        ("show", "print the inventory with current line numbers"),
        ("sync", "rewrite the covered-by column from the tests' declarations"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--root", type=Path, default=SOURCE_ROOT, help="the source checkout (default: this one)"
        )
        if name == "show":
            action.add_argument("ids", nargs="*", help="behaviour ids or section names")
    return parser


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    if args.behaviors_command == "sync":
        if not (root / INVENTORY).is_file():
            print(f"{PROG}: error: no {INVENTORY} in {root}", file=sys.stderr)
            return 2
        text, changed = sync(root)
        (root / INVENTORY).write_text(text, encoding="utf-8")
        print(f"{INVENTORY}: {changed} row(s) updated")
        return 0
    report = check(root)
    if args.behaviors_command == "show":
        print(show(report, args.ids))
    if report.problems:
        print(f"behaviors: {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.behaviors_command == "check":
        tests = len({d.node for d in report.declarations})
        print(
            f"behaviors: {len(report.inventory.behaviors)} behaviours, each covered "
            f"({tests} tests and scenarios declare them); the code and the inventory agree"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))

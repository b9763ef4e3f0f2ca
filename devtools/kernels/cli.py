"""`python -m devtools.kernels build | info | run`: the CPU-kernel matrix (docs/KERNELS.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.kernels.builds import BUILDS, HASWELL, KernelBuild
from devtools.kernels.compile import CompileError, ensure
from devtools.kernels.matrix import environment, probe, run_matrix


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser("build", help="compile a build's libraries if not cached")
    compile_.add_argument("build", nargs="?", default=HASWELL.name, choices=sorted(BUILDS))
    info = commands.add_parser("info", help="what a process loads under each build")
    info.add_argument("builds", nargs="*", metavar="BUILD", help=f"of {', '.join(BUILDS)} (all)")
    run = commands.add_parser(
        "run",
        help="the tests that compare texts under each build",
        description="Extra arguments after -- go to pytest, e.g. -- -n 2 -x.",
    )
    run.add_argument("--builds", default=",".join(BUILDS), help="comma-separated (default all)")
    run.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            built = ensure(BUILDS[args.build])
            how = "cached" if built.seconds is None else f"compiled in {built.seconds:.0f} s"
            print(f"{args.build}: {built.folder} ({how})")
            return 0
        if args.command == "info":
            for chosen in _chosen(parser, args.builds):
                print(f"{chosen.name}: {probe(environment(chosen, ensure(chosen).folder))}")
            return 0
        names = [name.strip() for name in args.builds.split(",") if name.strip()]
        outcomes = run_matrix(_chosen(parser, names), args.pytest_args)
    except CompileError as exc:
        print(f"kernels: {exc}", file=sys.stderr)
        return 1
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def _chosen(parser: argparse.ArgumentParser, names: Sequence[str]) -> list[KernelBuild]:
    """The builds named (all of them if none), or a usage error naming the unknown ones."""
    unknown = [name for name in names if name not in BUILDS]
    if unknown:
        parser.error(f"unknown build {', '.join(unknown)} (known: {', '.join(BUILDS)})")
    return [BUILDS[name] for name in names or BUILDS]

"""Runs llama.cpp's test_tool_call.py against this worker and counts the results.

`python -m devtools.llama_tool_tests [-n 2] [-k EXPR] [--results FILE]`: the tests folder
is copied from the sdist into a scratch folder beside the sdist's templates, its conftest.py
replaced by plugin.py's; the rest of the arguments go to pytest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.llama_tool_tests.report import load, summary
from devtools.sdist import llama_cpp_tree

REPO = Path(__file__).resolve().parents[2]
CONFTEST = f"""\
import sys
sys.path.insert(0, {str(REPO)!r})
from devtools.llama_tool_tests import plugin
sys.path.insert(0, {{tests!r}})
import utils
plugin.install(utils)
from devtools.llama_tool_tests.plugin import (
    _forget_last_error, pytest_runtest_makereport, pytest_sessionfinish,
)
"""


def prepare(scratch: Path) -> Path:
    """scratch/tools/server/tests, llama.cpp's own, beside links to its models/ and common/."""
    tree = llama_cpp_tree()
    tests = scratch / "tools" / "server" / "tests"
    tests.parent.mkdir(parents=True)
    shutil.copytree(tree / "tools" / "server" / "tests", tests)
    for part in ("models", "common"):
        (scratch / part).symlink_to(tree / part)
    (tests / "conftest.py").write_text(CONFTEST.format(tests=str(tests)))
    return tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.llama_tool_tests")
    parser.add_argument("--results", type=Path, help="keep the per-test JSON lines here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args, pytest_args = parser.parse_known_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="llama-tool-tests-"))
    try:
        tests = prepare(scratch)
        results = (args.results or scratch / "results.jsonl").resolve()
        results.unlink(missing_ok=True)
        env = {**os.environ, "SLOW_TESTS": "1", "LLAMA_TOOL_TESTS_RESULTS": str(results)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "pytest", "unit/test_tool_call.py", "-c", "pytest.ini"]
        command += ["-p", "no:cacheprovider", "-q", "--tb=line", *pytest_args]
        print(" ".join(command), flush=True)
        subprocess.run(command, cwd=tests, env=env, check=False)
        print(summary(load(results)) if results.is_file() else "no results")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

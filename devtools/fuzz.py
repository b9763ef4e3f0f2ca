"""Schemathesis against /openapi.json of a worker on the fake engine (real HTTP).

`make test` runs a short, seeded pass (tests/test_fuzz.py); `make fuzz` a long one. The gate:
zero 5xx and zero responses that break the published schema (status codes, content types,
headers, bodies), and no traceback in the worker's log. Checks that judge *which inputs* a
server accepts are left out: the worker's validation (a token id within the vocabulary, a
deadline in the future) is stricter than a JSON schema can say.

A request the client gave up on (30 s) fails the run too: every answer here takes
milliseconds, so a timeout means a connection the server left hanging.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llm_worker_rbee.testing.process import FakeWorkerProcess

GATE_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@dataclass
class FuzzResult:
    exit_code: int
    failures: list[str]  # "ST101 Server error: 1" lines
    generated: int
    network_errors: int
    tracebacks: int
    output: str

    @property
    def passed(self) -> bool:
        return (
            not self.failures
            and not self.tracebacks
            and not self.network_errors
            and self.generated > 0
        )


def run_fuzz(*, examples: int, seed: int, phases: str, all_checks: bool = False) -> FuzzResult:
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    worker = FakeWorkerProcess().start()
    try:
        command = [
            st, "run", f"{worker.url}/openapi.json",
            "--checks", "all" if all_checks else ",".join(GATE_CHECKS),
            "--max-examples", str(examples),
            "--seed", str(seed),
            "--request-timeout", "30",
            "--workers", "1",
            "--phases", phases,
        ]  # fmt: skip
        done = subprocess.run(command, check=False, capture_output=True, text=True)
    finally:
        worker.stop()
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    network = re.search(r"Network Error: (\d+)", output)
    return FuzzResult(
        exit_code=done.returncode,
        failures=re.findall(r"❌ (ST\d+ [^\n]*)", output),
        generated=int(generated.group(1)) if generated else 0,
        network_errors=int(network.group(1)) if network else 0,
        tracebacks=sum("Traceback" in line for line in worker.lines),
        output=output + "".join(worker.lines),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.fuzz")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--all-checks", action="store_true", help="report every check too")
    args = parser.parse_args(argv)
    result = run_fuzz(
        examples=args.examples, seed=args.seed, phases=args.phases, all_checks=args.all_checks
    )
    print(result.output)
    print(
        f"fuzz: {result.generated} cases, {len(result.failures)} failed checks "
        f"({', '.join(result.failures) or 'none'}), {result.network_errors} client timeouts, "
        f"{result.tracebacks} worker tracebacks -> {'PASS' if result.passed else 'FAIL'}"
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

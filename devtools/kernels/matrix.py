"""Runs the tests that compare texts, and the check of the build itself, once under each
kernel build: a pytest process per build, its llama.cpp chosen by LLAMA_CPP_LIB_PATH (the
worker processes the tests start inherit it) and named in RBEE_KERNELS for the check."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.kernels.builds import BUILD_ENV, NATIVE, KernelBuild, cpu_flags, missing_on_cpu
from devtools.kernels.compile import ensure

ROOT = Path(__file__).resolve().parents[2]
# The e2e tests that compare two texts (each names the promise it relies on), and
# tests/e2e/test_kernels.py, which checks that the worker runs the build asked for.
MARKERS = "compares_texts or kernels"
# As `make test`: two test processes, each with its own one-thread workers, one per core;
# flags given to `run` come after these, so `-n 0` runs in one process.
PYTEST_ARGS = ("-n", "2", "--dist", "worksteal")
_SUMMARY = re.compile(r"\d+ (passed|failed|errors?|deselected)\b.* in [\d.]+s|no tests ran")


@dataclass(frozen=True)
class Outcome:
    build: str
    ok: bool
    summary: str
    seconds: float


def environment(build: KernelBuild, folder: Path) -> dict[str, str]:
    """This process's environment with `build`'s llama.cpp chosen; native takes the venv's
    own, so a LLAMA_CPP_LIB_PATH set outside does not leak into it."""
    env = {key: value for key, value in os.environ.items() if key != "LLAMA_CPP_LIB_PATH"}
    if build.built_here:
        env["LLAMA_CPP_LIB_PATH"] = str(folder)
    env[BUILD_ENV] = build.name
    return env


def probe(env: dict[str, str]) -> str:
    """What a fresh process loads under `env`: llama.cpp's system info and library folders."""
    code = "from llm_worker_rbee.engine.kernels import describe; print(describe())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or f"(the probe failed: {done.stderr.strip()[-300:]})"


def run_build(build: KernelBuild, pytest_args: Sequence[str]) -> Outcome:
    """The marked tests under `build`, pytest's output passed through as it comes."""
    missing = missing_on_cpu(build, cpu_flags())
    if missing:
        summary = f"not run: this CPU lacks {', '.join(missing)}, which its kernels use"
        return Outcome(build.name, False, summary, 0.0)
    env = environment(build, ensure(build).folder)
    print(f"\n=== kernels {build.name}: {build.summary}", flush=True)
    print(f"=== {probe(env)}", flush=True)
    command = [sys.executable, "-m", "pytest", "-m", MARKERS, *PYTEST_ARGS, *pytest_args]
    print(f"=== {BUILD_ENV}={build.name} python {shlex.join(command[1:])}", flush=True)
    started = time.monotonic()
    summary = ""
    with subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            if _SUMMARY.search(line):
                summary = line.strip(" =\n")
    seconds = time.monotonic() - started
    return Outcome(build.name, process.returncode == 0, summary, seconds)


def run_matrix(builds: Sequence[KernelBuild], pytest_args: Sequence[str]) -> list[Outcome]:
    """Every build in turn (all of them, even after one fails), then a table."""
    outcomes = [run_build(build, pytest_args) for build in builds]
    print(f"\nkernel matrix (pytest -m {MARKERS!r}):")
    for outcome in outcomes:
        verdict = "ok    " if outcome.ok else "FAILED"
        print(f"  {outcome.build:<8} {verdict} {outcome.seconds:6.0f} s  {outcome.summary}")
    if NATIVE in builds and "avx512f" not in cpu_flags():
        print("  note: this CPU has no AVX-512, so native is an AVX2 build too: the matrix")
        print("  compares two AVX2 kernel sets here (AVX-512 ones need a CPU that has them)")
    return outcomes

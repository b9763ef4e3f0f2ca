"""The worker runs the llama.cpp kernel build the tests were asked to run under: its start-up
line names the CPU features llama.cpp was compiled with and the folder its libraries came
from. `make matrix` runs this under each build (RBEE_KERNELS names it, docs/KERNELS.md);
`make test` under the venv's own (native) build, with no RBEE_KERNELS.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from devtools.kernels.builds import (
    build_under_test,
    cpu_flags,
    expected_features,
    mismatches,
)
from devtools.kernels.compile import folder_of
from llm_worker_rbee.testing.process import WorkerProcess

pytestmark = [pytest.mark.real_model, pytest.mark.kernels]

BUILD_LINE = re.compile(r"llama\.cpp build: (?P<info>.*); libraries from (?P<folders>.*)$", re.M)


@pytest.mark.behavior("LOAD-024")
def test_the_worker_runs_the_kernel_build_asked_for(exact_worker: WorkerProcess) -> None:
    """Under haswell: AVX2 = 1 and AVX512 = 0; under native: AVX512 as /proc/cpuinfo says
    the CPU has it; and libllama and every libggml from that build's folder alone."""
    build = build_under_test(os.environ)
    found = BUILD_LINE.search(exact_worker.log())
    assert found, f"no 'llama.cpp build:' line in the worker's log:\n{exact_worker.log()}"
    flags = cpu_flags()
    assert mismatches(build, found["info"], flags) == [], (
        f"{build.name} should say {expected_features(build, flags)}: {found['info']}"
    )
    expected_folder = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or folder_of(build)).resolve()
    assert found["folders"].split(", ") == [str(expected_folder)]

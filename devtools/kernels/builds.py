"""The kernel builds of the matrix, what each was compiled with, and what its
`llama_print_system_info()` must then say on this CPU.

- `native`: the llama-cpp-python installed in the venv, compiled from its sdist by `pip
  install` with llama.cpp's default GGML_NATIVE (`-march=native`): AVX-512 on a CPU that has
  it. Loaded from the package's own `llama_cpp/lib`.
- `haswell`: the same sdist compiled for a baseline AVX2 CPU (the feature set of
  llama.cpp's own `haswell` CPU variant: SSE4.2, AVX, F16C, FMA, AVX2, BMI2; no AVX-512,
  no VNNI, no AMX), loaded through LLAMA_CPP_LIB_PATH.

On a CPU without AVX-512 both are AVX2 builds (native may add AVX-VNNI): the matrix then
checks two near-identical kernel sets and says so; the AVX-512 kernels need a CPU that has
them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Set by the matrix for each run: the build the tests must find loaded (unset: native).
BUILD_ENV = "RBEE_KERNELS"

# llama.cpp's name for a feature in its system info -> the Linux /proc/cpuinfo flag.
CPUINFO_FLAG = {
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
# What a native build is checked for: features every compiler in use turns on with
# -march=native when the CPU has them (newer extensions depend on the compiler's age).
NATIVE_CHECKED = ("AVX", "AVX2", "F16C", "FMA", "AVX512")


@dataclass(frozen=True)
class KernelBuild:
    """One build of the matrix.

    `cmake_flags` empty means the venv's own llama-cpp-python (nothing to build); `features`
    is what its system info must say (None: derived from the CPU, for native).
    """

    name: str
    summary: str
    cmake_flags: tuple[str, ...] = ()
    features: Mapping[str, bool] | None = None
    needs: tuple[str, ...] = field(default=())  # /proc/cpuinfo flags the CPU must have

    @property
    def built_here(self) -> bool:
        return bool(self.cmake_flags)


_HASWELL_ON = ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2")
_HASWELL_OFF = (
    *("AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"),
    *("AMX_TILE", "AMX_INT8", "AMX_BF16"),
)

NATIVE = KernelBuild(
    name="native",
    summary="the venv's llama-cpp-python, built by pip with -march=native",
)
HASWELL = KernelBuild(
    name="haswell",
    summary="the same source built for a baseline AVX2 CPU (no AVX-512)",
    cmake_flags=(
        "-DGGML_NATIVE=OFF",
        *(f"-DGGML_{name}=ON" for name in _HASWELL_ON),
        *(f"-DGGML_{name}=OFF" for name in _HASWELL_OFF),
    ),
    features={
        **dict.fromkeys(("AVX", "AVX2", "F16C", "FMA", "BMI2"), True),
        **dict.fromkeys(("AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI"), False),
        **dict.fromkeys(("AVX512_BF16", "AMX_INT8"), False),
    },
    needs=("avx", "avx2", "f16c", "fma", "bmi2"),
)
BUILDS = {build.name: build for build in (NATIVE, HASWELL)}


def build_under_test(environ: Mapping[str, str]) -> KernelBuild:
    """The build `environ` says is loaded (RBEE_KERNELS; native when unset)."""
    name = environ.get(BUILD_ENV, NATIVE.name)
    if name not in BUILDS:
        raise ValueError(f"{BUILD_ENV}={name}: not a kernel build (known: {', '.join(BUILDS)})")
    return BUILDS[name]


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def features(system_info: str) -> dict[str, bool]:
    """`"CPU : SSE3 = 1 | AVX512 = 0 | ..."` -> {"SSE3": True, "AVX512": False, ...}."""
    return {
        name: value != "0" for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\w+)", system_info)
    }


def expected_features(build: KernelBuild, flags: frozenset[str]) -> dict[str, bool]:
    """What `build`'s system info must say on a CPU with `flags`; a feature it does not
    mention counts as 0 (an ARM build names no AVX at all)."""
    if build.features is not None:
        return dict(build.features)
    return {name: CPUINFO_FLAG[name] in flags for name in NATIVE_CHECKED}


def mismatches(build: KernelBuild, system_info: str, flags: frozenset[str]) -> list[str]:
    """Each feature whose value differs from what `build` promises, as "AVX512 = 1, not 0"."""
    found = features(system_info)
    return [
        f"{name} = {int(found.get(name, False))}, expected {int(want)}"
        for name, want in expected_features(build, flags).items()
        if found.get(name, False) != want
    ]


def missing_on_cpu(build: KernelBuild, flags: frozenset[str]) -> list[str]:
    """The CPU features `build` needs that this CPU lacks (its kernels would die of SIGILL)."""
    return [flag for flag in build.needs if flag not in flags]

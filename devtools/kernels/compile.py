"""Compiles a kernel build's libllama and libggml* from the installed llama-cpp-python's own
sdist, once: the result is kept in the venv, keyed by that version and the build's flags.

The sdist's top-level CMakeLists.txt is configured as `pip install` configures it (Release,
shared libraries, RUNPATH $ORIGIN so each library finds its siblings in its own folder), with
only the CPU flags changed; only the `llama` target (and the ggml libraries it links) is built.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from devtools.kernels.builds import KernelBuild

# The llama-cpp-python sdist's CMakeLists.txt asks for this.
CMAKE_MINIMUM = (3, 21)
# Both cores, politely: other work shares them (`nice`), as `make test`'s first install does.
JOBS = "2"
# What pip's build sets and this one does not want: the sdist's multimodal library, and
# everything llama.cpp builds around the library itself.
COMMON_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-Wno-dev",  # the sdist's install() rules name scikit-build-core's folders, unset here
)
STAMP = "build.json"


class CompileError(Exception):
    """A step of the build failed; the message says which."""


@dataclass(frozen=True)
class Built:
    folder: Path
    seconds: float | None  # None: found in the cache


def llama_cpp_version() -> str:
    return version("llama_cpp_python")


def cache_root() -> Path:
    """`<venv>/kernels`: the builds live and go with the venv whose llama-cpp-python they
    match (`make clean` removes both)."""
    return Path(sys.prefix) / "kernels"


def folder_of(build: KernelBuild) -> Path:
    """Where `build`'s libraries are (the venv's own for native)."""
    if not build.built_here:
        # Found, not imported: importing llama_cpp would load a library into this process.
        spec = find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            raise CompileError("llama-cpp-python is not installed in this venv")
        return Path(spec.submodule_search_locations[0]) / "lib"
    return cache_root() / f"llama-cpp-python-{llama_cpp_version()}" / build.name


def _stamp(build: KernelBuild) -> dict[str, object]:
    return {"llama_cpp_python": llama_cpp_version(), "cmake_flags": list(build.cmake_flags)}


def cached(build: KernelBuild) -> bool:
    """The build is there, made from this version with these flags."""
    stamp = folder_of(build) / STAMP
    if not stamp.is_file():
        return False
    recorded = json.loads(stamp.read_text())
    return all(recorded.get(key) == value for key, value in _stamp(build).items())


def ensure(build: KernelBuild) -> Built:
    """`build`'s library folder, compiled first if it is not in the cache."""
    if not build.built_here or cached(build):
        return Built(folder_of(build), None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"kernels-{build.name}-") as scratch:
        work = Path(scratch)
        source = _unpack(download_sdist(work), work)
        _compile(source, work / "build", build)
        seconds = time.monotonic() - started
        _keep(work / "build" / "bin", folder_of(build), {**_stamp(build), "seconds": seconds})
    return Built(folder_of(build), seconds)


def _run(step: str, command: list[str]) -> None:
    print(f"kernels: {step}: {' '.join(command)}", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise CompileError(f"{step} failed (command above)")


def download_sdist(work: Path) -> Path:
    """The sdist of the installed version, through pip (and so pip's cache), in `work`/sdist
    (devtools/llama_tool_tests reads llama.cpp's tests and templates from it too)."""
    spec = f"llama-cpp-python=={llama_cpp_version()}"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    _run("download", [*pip, "--no-binary", ":all:", spec, "-d", str(work / "sdist")])
    found = sorted((work / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise CompileError(f"pip download left no sdist of {spec}")
    return found[0]


def _unpack(sdist: Path, work: Path) -> Path:
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on: refuse links out of the folder
            archive.extractall(work / "src", filter="data")
        else:  # older 3.11: the sdist pip downloaded, trusted as pip trusts it to build
            archive.extractall(work / "src")
    tops = list((work / "src").iterdir())
    if len(tops) != 1 or not (tops[0] / "CMakeLists.txt").is_file():
        raise CompileError(f"{sdist.name} is not the sdist expected (no CMakeLists.txt)")
    return tops[0]


def _compile(source: Path, build_dir: Path, build: KernelBuild) -> None:
    cmake = _cmake()
    flags = [*COMMON_FLAGS, *build.cmake_flags]
    _run("configure", [cmake, "-S", str(source), "-B", str(build_dir), *flags])
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    build_command = [cmake, "--build", str(build_dir), "--target", "llama", "--parallel", JOBS]
    _run("compile", [*nice, *build_command])


def _cmake() -> str:
    """A CMake new enough for the sdist: the one on PATH, else pip's `cmake` in the venv
    (as scikit-build-core fetches one when pip builds llama-cpp-python)."""
    on_path = shutil.which("cmake")
    if on_path and _cmake_version(on_path) >= CMAKE_MINIMUM:
        return on_path
    _run("install cmake", [sys.executable, "-m", "pip", "install", "--quiet", "cmake"])
    return str(Path(sys.executable).parent / "cmake")


def _cmake_version(cmake: str) -> tuple[int, ...]:
    output = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"(\d+)\.(\d+)", output.stdout)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def _keep(built: Path, folder: Path, stamp: dict[str, object]) -> None:
    """Copies the libraries (their soname links as links) into the cache, stamp last, through
    a side folder so that an interrupted copy is never taken for a build."""
    names = sorted(path.name for path in built.glob("lib*.so*"))
    if not any(name.startswith("libllama.") for name in names):
        raise CompileError(f"the build left no libllama in {built}")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in names:
        shutil.copy2(built / name, partial / name, follow_symlinks=False)
    (partial / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)

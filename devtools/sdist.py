"""The installed llama-cpp-python's own sdist, through pip (and so pip's cache): the kernel
builds compile it (devtools/kernels), the tests read llama.cpp's copies of published chat
templates from it (its vendor/llama.cpp/models/templates), and devtools/llama_tool_tests
runs llama.cpp's tool-call tests from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

VENDOR = "vendor/llama.cpp/"
# What llama_cpp_tree takes from the sdist's vendor/llama.cpp/.
PARTS = ("tools/server/tests/", "models/templates/", "common/")


class SdistError(Exception):
    """The sdist could not be had; the message says which step failed."""


def llama_cpp_version() -> str:
    return version("llama_cpp_python")


def run(step: str, command: list[str]) -> None:
    print(f"sdist: {step}: {' '.join(command)}", flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise SdistError(f"{step} failed (command above)")


def download(work: Path) -> Path:
    """The sdist of the installed version, downloaded into `work`/sdist."""
    spec = f"llama-cpp-python=={llama_cpp_version()}"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    run("download", [*pip, "--no-binary", ":all:", spec, "-d", str(work / "sdist")])
    found = sorted((work / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise SdistError(f"pip download left no sdist of {spec}")
    return found[0]


def unpack(sdist: Path, work: Path) -> Path:
    """The sdist unpacked into `work`/src: its top folder."""
    with tarfile.open(sdist) as archive:
        _extract(archive, work / "src", archive.getmembers())
    tops = list((work / "src").iterdir())
    if len(tops) != 1 or not (tops[0] / "CMakeLists.txt").is_file():
        raise SdistError(f"{sdist.name} is not the sdist expected (no CMakeLists.txt)")
    return tops[0]


def llama_cpp_tree() -> Path:
    """A folder standing for the installed version's llama.cpp source root, holding only
    PARTS (its server tests, published chat templates and chat code, in their layout: the
    tests name templates as ../../../models/templates/), unpacked into the venv on first use
    (`<venv>/llama-cpp-python-<version>-source`)."""
    root = Path(sys.prefix) / f"llama-cpp-python-{llama_cpp_version()}-source"
    if (root / "models" / "templates").is_dir():
        return root
    # Written beside its place, then renamed: a reader never sees half a folder.
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    with (
        tempfile.TemporaryDirectory(prefix="llama-cpp-source-") as scratch,
        tarfile.open(download(Path(scratch))) as archive,
    ):
        for member in archive.getmembers():
            _, _, inside = member.name.partition("/")
            relative = inside.removeprefix(VENDOR)
            if relative == inside or not member.isfile() or not relative.startswith(PARTS):
                continue
            if ".." in Path(relative).parts:
                continue
            source = archive.extractfile(member)
            assert source is not None
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    try:
        os.rename(partial, root)
    except OSError:  # another process put it there first
        shutil.rmtree(partial, ignore_errors=True)
    return root


def templates_folder() -> Path:
    """llama.cpp's published chat templates (`Qwen-Qwen3-0.6B.jinja`, ...)."""
    return llama_cpp_tree() / "models" / "templates"


def template_text(name: str) -> str:
    """The published template `models/templates/<name>.jinja`."""
    return (templates_folder() / f"{name}.jinja").read_text()


def _extract(archive: tarfile.TarFile, into: Path, members: list[tarfile.TarInfo]) -> None:
    if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on: refuse links out of the folder
        archive.extractall(into, members=members, filter="data")
    else:  # older 3.11: the sdist pip downloaded, trusted as pip trusts it to build
        archive.extractall(into, members=members)

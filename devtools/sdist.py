"""The installed llama-cpp-python's own sdist, through pip (and so pip's cache): the kernel
builds compile it (devtools/kernels), and the tests read llama.cpp's copies of published
chat templates from it (its vendor/llama.cpp/models/templates)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

TEMPLATES = "vendor/llama.cpp/models/templates/"


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


def templates_folder() -> Path:
    """llama.cpp's published chat templates (`Qwen-Qwen3-0.6B.jinja`, ...) of the installed
    version, kept in the venv after the first download (`<venv>/sdist-templates/<version>`)."""
    folder = Path(sys.prefix) / "sdist-templates" / llama_cpp_version()
    if folder.is_dir():
        return folder
    with tempfile.TemporaryDirectory(prefix="sdist-templates-") as scratch:
        work = Path(scratch)
        with tarfile.open(download(work)) as archive:
            members = [m for m in archive.getmembers() if TEMPLATES in m.name and m.isfile()]
            if not members:
                raise SdistError(f"the sdist has no {TEMPLATES}")
            _extract(archive, work / "src", members)
        found = next((work / "src").glob(f"*/{TEMPLATES}"))
        # Copied beside its place, then renamed: a reader never sees half a folder.
        partial = folder.parent / f".{folder.name}.{Path(scratch).name}"
        shutil.copytree(found, partial)
        try:
            partial.rename(folder)
        except OSError:  # another process put it there first
            shutil.rmtree(partial)
    return folder


def _extract(archive: tarfile.TarFile, into: Path, members: list[tarfile.TarInfo]) -> None:
    if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on: refuse links out of the folder
        archive.extractall(into, members=members, filter="data")
    else:  # older 3.11: the sdist pip downloaded, trusted as pip trusts it to build
        archive.extractall(into, members=members)

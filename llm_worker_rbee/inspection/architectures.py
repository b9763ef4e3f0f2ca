"""Which model architectures the installed llama.cpp can serve text with, read from the
library itself (docs/MODEL_LOADING.md, "Which architectures are supported")."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import gguf

# In llama.cpp's architecture table but not a model llama.cpp can serve text with.
_NOT_LANGUAGE_MODELS = {"clip": "a vision projector (mmproj), not a language model"}


def architecture_problem(arch: str, supported: Collection[str] | None = None) -> str | None:
    """Why llama.cpp cannot serve text with `arch` (None: it can)."""
    if arch in _NOT_LANGUAGE_MODELS:
        return f"is {_NOT_LANGUAGE_MODELS[arch]} ({arch!r})"
    if arch not in (supported_architectures() if supported is None else supported):
        return (
            f"has architecture {arch!r}, which the installed llama.cpp does not know "
            f"(llama-cpp-python {_llama_cpp_version()}); a newer llama.cpp may read it"
        )
    return None


_ARCH_NAME = re.compile(rb"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class ArchSupport(Collection[str]):
    """Architecture names the installed llama.cpp knows, and where that list came from."""

    names: frozenset[str]
    source: str

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)


def supported_architectures(library: Path | None = None) -> ArchSupport:
    """The architecture names compiled into the installed libllama.

    llama.cpp keeps its architecture names in one table (`LLM_ARCH_NAMES` in
    `src/llama-arch.cpp`), compiled into the library as consecutive NUL-terminated strings
    (`"clip", "llama", "llama4", ... "(unknown)"`). We read that run from the shared
    library: it is exactly what this build can load, without asking llama.cpp to open a
    file. The linker may merge a short name into the tail of a longer one (`bert` lives
    inside `modern-bert`); such tails count when the `gguf` package, maintained in the
    llama.cpp repository, knows them as an architecture. Where the library cannot be read,
    the `gguf` package's list is used instead (`source` says which).
    """
    known = set(gguf.MODEL_ARCH_NAMES.values())
    path = library or _libllama_path()
    table: list[str] = []
    if path is not None:
        try:
            table = _arch_table(path.read_bytes())
        except OSError:
            table = []
    if len(table) < 10:  # not found: fall back to the maintained list
        return ArchSupport(frozenset(known), f"gguf {_gguf_version()} MODEL_ARCH_NAMES")
    names = set(table)
    names |= {name for name in known - names if any(t.endswith(name) for t in table)}
    return ArchSupport(frozenset(names), str(path))


def _arch_table(data: bytes) -> list[str]:
    best: list[str] = []
    start = 0
    while (hit := data.find(b"\x00llama\x00", start)) >= 0:
        start = hit + 1
        left = hit
        while True:
            prev = data.rfind(b"\x00", 0, left)
            if prev < 0 or not _ARCH_NAME.fullmatch(data[prev + 1 : left]):
                break
            left = prev
        right = hit + 1
        while True:
            end = data.find(b"\x00", right)
            if end < 0 or not _ARCH_NAME.fullmatch(data[right:end]):
                break
            right = end + 1
        run = data[left + 1 : right - 1].split(b"\x00")
        if len(run) > len(best):
            best = [name.decode() for name in run]
    return best


def _libllama_path() -> Path | None:
    override = os.environ.get("LLAMA_CPP_LIB_PATH")  # llama-cpp-python's own override
    spec = importlib.util.find_spec("llama_cpp")
    folders = [Path(override)] if override else []
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) / "lib" for p in spec.submodule_search_locations]
    names = {"darwin": "libllama.dylib", "win32": "llama.dll"}
    name = names.get(sys.platform, "libllama.so")
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def _llama_cpp_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "unknown"


def _gguf_version() -> str:
    try:
        return version("gguf")
    except PackageNotFoundError:
        return "unknown"

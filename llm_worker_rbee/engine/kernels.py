"""Which llama.cpp this process runs: the CPU features its kernels were compiled for, and the
folders its libraries were loaded from.

llama.cpp picks its CPU kernels when it is compiled (AVX2, AVX-512, VNNI, ...), and two
builds of the same source give different numbers. The worker logs this line at start-up so a
log says which build made a text; `make matrix` (devtools/kernels) checks it under each build.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp

MAPS = Path("/proc/self/maps")


def system_info() -> str:
    """llama.cpp's own line, e.g. "CPU : SSE3 = 1 | ... | AVX2 = 1 | ... | AVX512 = 0 | ...":
    the features its CPU backend was compiled with (not what the CPU has)."""
    return str(llama_cpp.llama_print_system_info().decode()).strip(" |")


def library_dirs(maps: Path = MAPS) -> list[str]:
    """The folders this process mapped libllama and libggml* from (Linux; empty elsewhere).

    More than one means a mix: libllama from one build and ggml from another (a library with
    the same soname already loaded is reused, whatever LLAMA_CPP_LIB_PATH says).
    """
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    found = {
        str(Path(fields[-1]).parent)
        for fields in (line.split() for line in lines)
        if len(fields) >= 6 and Path(fields[-1]).name.startswith(("libllama.", "libggml"))
    }
    return sorted(found)


def describe() -> str:
    """One line: the system info and where the libraries came from."""
    return f"{system_info()}; libraries from {', '.join(library_dirs()) or 'unknown'}"

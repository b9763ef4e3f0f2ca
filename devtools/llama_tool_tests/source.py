"""llama.cpp's server tests, published chat templates and chat code, from the installed
llama-cpp-python's own sdist (fetched through pip, as devtools/kernels does), unpacked once
into the venv: the repository copies none of them in."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from devtools.kernels.compile import download_sdist, llama_cpp_version

# What is taken from the sdist's vendor/llama.cpp/, keeping its layout (the tests name
# templates as ../../../models/templates/ from tools/server/tests/).
PARTS = ("tools/server/tests/", "models/templates/", "common/")
_VENDOR = "vendor/llama.cpp/"


def llama_cpp_tree() -> Path:
    """The folder standing for llama.cpp's source root (PARTS only), unpacked on first use."""
    root = Path(sys.prefix) / f"llama-cpp-python-{llama_cpp_version()}-source"
    if (root / "models" / "templates").is_dir():
        return root
    with tempfile.TemporaryDirectory(prefix="llama-cpp-source-") as scratch:
        work = Path(scratch)
        sdist = download_sdist(work)
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                _, _, inside = member.name.partition("/")
                if not inside.startswith(_VENDOR) or not member.isfile():
                    continue
                relative = inside[len(_VENDOR) :]
                if not relative.startswith(PARTS) or ".." in Path(relative).parts:
                    continue
                source = archive.extractfile(member)
                assert source is not None
                target = partial / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
        shutil.rmtree(root, ignore_errors=True)
        os.replace(partial, root)
    return root


def template_text(name: str) -> str:
    """The published template `models/templates/<name>.jinja`."""
    return (llama_cpp_tree() / "models" / "templates" / f"{name}.jinja").read_text()

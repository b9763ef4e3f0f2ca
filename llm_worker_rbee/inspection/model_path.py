"""Which file to serve: `--model PATH` (or an rbee catalog id), `--model-ref REF` inside
`--models-dir`, or the bundled one.

Nothing here downloads. Every failure is a `ModelPathError` whose one line names what was
looked for and where.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llm_worker_rbee.inspection.bundled import BUNDLED_MODEL_ID, bundled_model_path, cache_dir

REF_SCHEMES = ("hf:", "file:")


class ModelPathError(Exception):
    """No single model file where the settings point; the message is one line."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    path: Path
    model_id: str  # the name the worker serves the model under
    source: str  # how it was found, for the start-up log


def rbee_catalog_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/rbee/models`: where rbee's hive keeps its model catalog."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "rbee" / "models"


def catalog_entry_dir(model_id: str, catalog: Path) -> Path:
    """rbee's folder for a catalog id: `/` and `:` become `-` (`org/repo:f.gguf` ->
    `org-repo-f.gguf`), one flat folder per model."""
    return catalog / model_id.replace("/", "-").replace(":", "-")


def default_models_dir() -> Path:
    """`$XDG_CACHE_HOME/llm-worker-rbee/models`: where the bundled model is assembled too."""
    return cache_dir()


def resolve_model(
    model: str | Path | None,
    model_ref: str | None,
    models_dir: Path | None,
    *,
    bundled: Callable[[], Path] = bundled_model_path,
    catalog: Path | None = None,
) -> ResolvedModel:
    """Finds the one GGUF file to serve.

    - `model` (`--model`): a file, or a directory holding exactly one `.gguf`; `~` and
      relative paths are expanded against the current directory. `model_ref` is then
      only the hive's name for it. A `model` that is no existing path and not written
      as one (absolute, `~`, `./`) is an rbee catalog id (rbee's hive passes
      `--model TheBloke/...-GGUF`): its folder in `catalog` (default
      `rbee_catalog_dir()`) holds `metadata.json` naming the file (`artifact.path`) or
      else one `.gguf`, and the model is served under that id.
    - else `model_ref` (`--model-ref`) with a scheme: `hf:ORG/REPO/FILE.gguf` is
      `MODELS_DIR/ORG/REPO/FILE.gguf`, `hf:ORG/REPO` the one `.gguf` in
      `MODELS_DIR/ORG/REPO`, `file:NAME` is `MODELS_DIR/NAME` (a file or a directory).
      A name that would leave `MODELS_DIR` is refused. A ref without a scheme is only a
      name: the bundled model is served when it names the bundled model.
    - else the bundled model.

    Raises:
        ModelPathError: naming the flag, what was looked for and where.
    """
    if model is not None:
        given = Path(model)
        if _catalog_id_like(str(model)) and not _absolute(given).exists():
            return _from_catalog(str(model), model_ref, catalog or rbee_catalog_dir())
        path = _find_gguf(_absolute(given), f"--model {str(model)!r}")
        return ResolvedModel(path, model_ref or path.stem, f"--model {path}")
    if model_ref is None or model_ref == BUNDLED_MODEL_ID:
        return ResolvedModel(bundled(), model_ref or BUNDLED_MODEL_ID, "the bundled model")
    if not model_ref.startswith(REF_SCHEMES):
        raise ModelPathError(
            f"--model-ref {model_ref!r}: no --model given and the ref names no file; "
            f"use hf:ORG/REPO/FILE.gguf or file:NAME (looked up in --models-dir), "
            f"or {BUNDLED_MODEL_ID!r} for the bundled model"
        )
    root = _absolute(models_dir) if models_dir is not None else default_models_dir()
    flag = f"--model-ref {model_ref!r}"
    scheme, _, name = model_ref.partition(":")
    parts = _safe_parts(name, flag, root)
    if scheme == "hf" and len(parts) < 2:
        raise ModelPathError(f"{flag}: expected hf:ORG/REPO or hf:ORG/REPO/FILE.gguf")
    if not root.is_dir():
        raise ModelPathError(f"{flag}: --models-dir {root} is not a directory")
    path = _find_gguf(root.joinpath(*parts), f"{flag} (in --models-dir {root})")
    return ResolvedModel(path, model_ref, f"{model_ref} in {root}")


def _catalog_id_like(model: str) -> bool:
    """A name that may be an rbee catalog id: not absolute, not `~` or `./`-relative."""
    return not (os.path.isabs(model) or model.startswith(("~", "./", "../")))


def _from_catalog(model_id: str, model_ref: str | None, catalog: Path) -> ResolvedModel:
    """The file of an rbee catalog entry; refuses, naming both places it looked."""
    folder = catalog_entry_dir(model_id, catalog)
    what = f"--model {model_id!r}"
    if not folder.is_dir():
        raise ModelPathError(
            f"{what}: no such file, and no rbee catalog entry {folder} "
            f"(looked at {_absolute(Path(model_id))} and {folder})"
        )
    named = _metadata_artifact(folder, what)
    path = _find_gguf(named if named is not None else folder, f"{what} (rbee catalog {folder})")
    return ResolvedModel(path, model_ref or model_id, f"rbee catalog entry {folder}")


def _metadata_artifact(folder: Path, what: str) -> Path | None:
    """`artifact.path` of the entry's metadata.json (relative to the folder if relative),
    or None when there is no metadata.json or it names no path."""
    meta = folder / "metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPathError(f"{what}: {meta} is not readable JSON ({exc})") from None
    artifact = data.get("artifact") if isinstance(data, dict) else None
    path = artifact.get("path") if isinstance(artifact, dict) else None
    if not isinstance(path, str) or not path:
        return None
    return folder / Path(path).expanduser()  # an absolute path replaces the folder


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def _safe_parts(name: str, flag: str, root: Path) -> tuple[str, ...]:
    """The path components of a ref's name; refuses names that would leave the folder."""
    pure = PurePosixPath(name)
    parts = pure.parts
    if not name or pure.is_absolute() or "\\" in name or name.startswith("~"):
        raise ModelPathError(f"{flag}: the name must be relative to --models-dir {root}")
    if any(part in ("..", ".") for part in parts) or any(p != p.strip() for p in parts):
        raise ModelPathError(f"{flag}: the name must stay inside --models-dir {root}")
    return parts


def _find_gguf(path: Path, what: str) -> Path:
    """`path` itself when it is a file, or the one `.gguf` inside it when it is a folder."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix == ".gguf" and p.is_file())
        if not found:
            raise ModelPathError(f"{what}: no .gguf file in the directory {path}")
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:5]) + (", ..." if len(found) > 5 else "")
            raise ModelPathError(
                f"{what}: {len(found)} .gguf files in {path} ({names}); name one of them"
            )
        return found[0]
    if path.is_symlink() and not path.exists():
        raise ModelPathError(f"{what}: {path} links to {os.readlink(path)}, which is not there")
    if not path.exists():
        parent = path.parent
        hint = "" if parent.is_dir() else f" (the directory {parent} does not exist either)"
        raise ModelPathError(f"{what}: no file at {path}{hint}")
    return path  # a file, a dangling link, a socket...: gguf_check says what is wrong

"""Which file `--model`, `--model-ref` and `--models-dir` point at; every miss says where."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_worker_rbee.inspection.bundled import BUNDLED_MODEL_ID
from llm_worker_rbee.inspection.model_path import (
    ModelPathError,
    ResolvedModel,
    default_models_dir,
    resolve_model,
)

BUNDLED = Path("/bundled/gemma.gguf")


def resolve(
    model: Path | None = None, ref: str | None = None, models_dir: Path | None = None
) -> ResolvedModel:
    return resolve_model(model, ref, models_dir, bundled=lambda: BUNDLED)


def refused(
    model: Path | None = None, ref: str | None = None, models_dir: Path | None = None
) -> str:
    with pytest.raises(ModelPathError) as caught:
        resolve(model, ref, models_dir)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


# -- --model ---------------------------------------------------------------------------------


@pytest.mark.behavior("LOAD-002")
def test_absolute_file(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.gguf")
    assert resolve(path) == ResolvedModel(path, "m", f"--model {path}")


@pytest.mark.behavior("LOAD-002")
def test_relative_file_and_the_hive_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = touch(tmp_path / "models" / "m.gguf")
    monkeypatch.chdir(tmp_path)
    found = resolve(Path("models/m.gguf"), "hf:org/repo")
    assert (found.path, found.model_id) == (path, "hf:org/repo")


@pytest.mark.behavior("LOAD-002")
def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = touch(tmp_path / "m.gguf")
    assert resolve(Path("~/m.gguf")).path == path


@pytest.mark.behavior("LOAD-002")
def test_directory_with_one_gguf(tmp_path: Path) -> None:
    path = touch(tmp_path / "m.gguf")
    touch(tmp_path / "README.md")
    assert resolve(tmp_path).path == path


@pytest.mark.behavior("LOAD-004")
def test_directory_without_gguf(tmp_path: Path) -> None:
    touch(tmp_path / "README.md")
    assert (
        refused(tmp_path) == f"--model {str(tmp_path)!r}: no .gguf file in the directory {tmp_path}"
    )


@pytest.mark.behavior("LOAD-004")
def test_directory_with_several(tmp_path: Path) -> None:
    for name in "abcdefg":
        touch(tmp_path / f"{name}.gguf")
    assert refused(tmp_path) == (
        f"--model {str(tmp_path)!r}: 7 .gguf files in {tmp_path} "
        "(a.gguf, b.gguf, c.gguf, d.gguf, e.gguf, ...); name one of them"
    )


@pytest.mark.behavior("LOAD-004")
def test_missing_file(tmp_path: Path) -> None:
    assert (
        refused(tmp_path / "m.gguf")
        == f"--model {str(tmp_path / 'm.gguf')!r}: no file at {tmp_path / 'm.gguf'}"
    )
    assert refused(Path("/nope/m.gguf")) == (
        "--model '/nope/m.gguf': no file at /nope/m.gguf "
        "(the directory /nope does not exist either)"
    )


@pytest.mark.behavior("LOAD-004")
def test_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").symlink_to(tmp_path / "gone.gguf")
    assert refused(tmp_path / "m.gguf") == (
        f"--model {str(tmp_path / 'm.gguf')!r}: {tmp_path / 'm.gguf'} links to "
        f"{tmp_path / 'gone.gguf'}, which is not there"
    )


# -- --model-ref in --models-dir -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "where"),
    [
        ("hf:org/repo/m-Q4.gguf", "org/repo/m-Q4.gguf"),
        ("hf:org/repo", "org/repo/only.gguf"),
        ("file:m.gguf", "m.gguf"),
        ("file:family/7b", "family/7b/only.gguf"),
    ],
)
@pytest.mark.behavior("LOAD-003")
def test_refs_resolve_inside_the_models_dir(tmp_path: Path, ref: str, where: str) -> None:
    path = touch(tmp_path / where)
    found = resolve(ref=ref, models_dir=tmp_path)
    assert found == ResolvedModel(path, ref, f"{ref} in {tmp_path}")


@pytest.mark.behavior("LOAD-004")
def test_ref_that_is_not_there(tmp_path: Path) -> None:
    assert refused(ref="hf:org/repo/m.gguf", models_dir=tmp_path) == (
        f"--model-ref 'hf:org/repo/m.gguf' (in --models-dir {tmp_path}): no file at "
        f"{tmp_path / 'org/repo/m.gguf'} (the directory {tmp_path / 'org/repo'} does not "
        "exist either)"
    )


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("file:../outside.gguf", "must stay inside"),
        ("hf:org/../../outside.gguf", "must stay inside"),
        ("file:/etc/passwd", "must be relative to"),
        ("file:~/m.gguf", "must be relative to"),
        ("file:..\\m.gguf", "must be relative to"),
        ("file:", "must be relative to"),
    ],
)
@pytest.mark.behavior("LOAD-003")
def test_names_that_escape_are_refused(tmp_path: Path, ref: str, problem: str) -> None:
    touch(tmp_path / "outside.gguf")
    models = tmp_path / "models"
    models.mkdir()
    message = refused(ref=ref, models_dir=models)
    assert message.startswith(f"--model-ref {ref!r}: the name {problem} --models-dir {models}")


@pytest.mark.behavior("LOAD-003")
def test_hf_ref_needs_org_and_repo(tmp_path: Path) -> None:
    assert refused(ref="hf:repo", models_dir=tmp_path) == (
        "--model-ref 'hf:repo': expected hf:ORG/REPO or hf:ORG/REPO/FILE.gguf"
    )


@pytest.mark.behavior("LOAD-003")
def test_models_dir_must_exist(tmp_path: Path) -> None:
    assert refused(ref="file:m.gguf", models_dir=tmp_path / "none") == (
        f"--model-ref 'file:m.gguf': --models-dir {tmp_path / 'none'} is not a directory"
    )


@pytest.mark.behavior("LOAD-001")
def test_default_models_dir_is_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / "llm-worker-rbee" / "models"
    path = touch(default_models_dir() / "m.gguf")
    assert resolve(ref="file:m.gguf").path == path


@pytest.mark.behavior("LOAD-003")
def test_ref_without_a_scheme(tmp_path: Path) -> None:
    assert refused(ref="llama-3-8b", models_dir=tmp_path) == (
        "--model-ref 'llama-3-8b': no --model given and the ref names no file; use "
        "hf:ORG/REPO/FILE.gguf or file:NAME (looked up in --models-dir), or "
        f"{BUNDLED_MODEL_ID!r} for the bundled model"
    )


# -- the bundled default ---------------------------------------------------------------------


@pytest.mark.behavior("LOAD-001")
def test_nothing_given_is_the_bundled_model() -> None:
    assert resolve() == ResolvedModel(BUNDLED, BUNDLED_MODEL_ID, "the bundled model")


@pytest.mark.behavior("LOAD-001")
def test_the_bundled_id_as_ref_is_the_bundled_model() -> None:
    assert resolve(ref=BUNDLED_MODEL_ID).path == BUNDLED

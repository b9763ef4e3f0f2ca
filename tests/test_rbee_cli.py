"""Started by rbee's hive: its argv, its model catalog, and every refusal in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llm_worker_rbee.cli import main
from llm_worker_rbee.config import SettingsError, parse_serve_args, settings_from
from llm_worker_rbee.inspection.model_path import (
    ModelPathError,
    catalog_entry_dir,
    rbee_catalog_dir,
    resolve_model,
)


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a child process: what the hive sees (exit code, stderr)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LLM_WORKER_API_KEY",)}
    return subprocess.run(
        [sys.executable, "-m", "llm_worker_rbee", *argv],
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("llm-worker-rbee: error: ")
    return lines[0]


@pytest.mark.behavior("CFG-021")
def test_build_info_says_release(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--build-info"]) == 0
    assert capsys.readouterr().out == "release\n"


@pytest.mark.behavior("CFG-021")
def test_the_hives_exact_argv_is_accepted() -> None:
    settings = parse_serve_args(
        [
            "--worker-id",
            "worker-cuda-8081",
            "--model",
            "org/repo:file.gguf",
            "--device",
            "1",
            "--port",
            "8081",
            "--queen-url",
            "http://localhost:7833",
        ]
    )
    assert settings.worker_id == "worker-cuda-8081"
    assert settings.model == "org/repo:file.gguf"  # exactly as given
    assert (settings.device, settings.port) == (1, 8081)
    assert settings.queen_url == "http://localhost:7833"
    assert settings.backend == "cuda"  # from the worker id's type


@pytest.mark.behavior("CFG-022")
@pytest.mark.parametrize(
    ("argv", "backend"),
    [
        ("--worker-id worker-cpu-8080 --port 8080", "cpu"),
        ("--worker-id worker-cuda-8080 --port 8080", "cuda"),
        ("--worker-id worker-cuda-8080 --port 8080 --backend cpu", "cpu"),  # the flag wins
        ("--worker-id worker-cuda-9000 --port 8080", "auto"),  # not rbee's: port differs
        ("--worker-id worker-gpu01-8080 --port 8080", "auto"),  # a name, not a type
    ],
)
def test_the_backend_follows_an_rbee_worker_id(argv: str, backend: str) -> None:
    assert parse_serve_args(argv.split()).backend == backend


@pytest.mark.behavior("CFG-022")
def test_an_unsupported_worker_type_exits_3_in_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_serve_args(["--worker-id", "worker-metal-8080", "--port", "8080"])
    assert caught.value.exit_code == 3
    assert "metal backend is not supported" in str(caught.value)
    result = run_cli("--worker-id", "worker-metal-8080", "--model", "x", "--port", "8080")
    assert result.returncode == 3
    assert "--worker-id worker-metal-8080" in one_line_error(result)


@pytest.mark.behavior("CFG-023")
def test_local_mode_is_loopback_without_a_key() -> None:
    assert parse_serve_args(["--local-mode"]).local_mode
    with pytest.raises(SettingsError, match="--local-mode serves without an API key"):
        settings_from({"local_mode": "true"}, {"LLORCH_API_TOKEN": "t"})
    with pytest.raises(SettingsError, match="loopback only"):
        settings_from({"local_mode": "true", "host": "0.0.0.0", "insecure": "true"}, {})


@pytest.mark.behavior("CFG-024")
def test_cuda_device_is_rbees_name_for_device() -> None:
    assert parse_serve_args(["--cuda-device", "2"]).device == 2
    assert parse_serve_args(["--cuda-device", "2", "--device", "2"]).device == 2
    with pytest.raises(SettingsError, match="name different GPUs"):
        parse_serve_args(["--cuda-device", "2", "--device", "1"])


@pytest.mark.behavior("CFG-025")
@pytest.mark.parametrize("url", ["http://0.0.0.0:8080", "http://[::]:8080", "ftp://host"])
def test_advertise_url_must_be_reachable(url: str) -> None:
    with pytest.raises(SettingsError, match="--advertise-url"):
        parse_serve_args(["--advertise-url", url])
    assert parse_serve_args(["--advertise-url", "http://gpu-7:8080/"]).advertise_url == (
        "http://gpu-7:8080"
    )


@pytest.mark.behavior("LOAD-022")
def test_a_catalog_id_is_found_in_rbees_model_cache(tmp_path: Path) -> None:
    catalog = rbee_catalog_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert catalog == tmp_path / "rbee" / "models"
    assert rbee_catalog_dir({"HOME": "/h"}).parts[-2:] == ("rbee", "models")
    folder = catalog_entry_dir("TheBloke/TinyLlama-GGUF:tiny.Q4.gguf", catalog)
    assert folder.name == "TheBloke-TinyLlama-GGUF-tiny.Q4.gguf"
    folder.mkdir(parents=True)
    (folder / "model.gguf").write_bytes(b"GGUF")
    (folder / "other.gguf").write_bytes(b"GGUF")
    # metadata.json names the file (two .gguf here: without it, no single choice).
    with pytest.raises(ModelPathError, match=r"2 \.gguf files"):
        resolve_model("TheBloke/TinyLlama-GGUF:tiny.Q4.gguf", None, None, catalog=catalog)
    meta = {"artifact": {"id": "x", "path": str(folder / "model.gguf")}, "added_at": "t"}
    (folder / "metadata.json").write_text(json.dumps(meta))
    found = resolve_model("TheBloke/TinyLlama-GGUF:tiny.Q4.gguf", None, None, catalog=catalog)
    assert found.path == folder / "model.gguf"
    assert found.model_id == "TheBloke/TinyLlama-GGUF:tiny.Q4.gguf"  # the queen matches it
    # Without metadata, the one .gguf there; --model-ref still names it.
    (folder / "metadata.json").unlink()
    (folder / "other.gguf").unlink()
    found = resolve_model("TheBloke/TinyLlama-GGUF:tiny.Q4.gguf", "ref", None, catalog=catalog)
    assert (found.path.name, found.model_id) == ("model.gguf", "ref")
    (folder / "metadata.json").write_text("{broken")
    with pytest.raises(ModelPathError, match=r"metadata\.json is not readable JSON"):
        resolve_model("TheBloke/TinyLlama-GGUF:tiny.Q4.gguf", None, None, catalog=catalog)


@pytest.mark.behavior("LOAD-023")
def test_an_unresolvable_catalog_id_exits_3_naming_where_it_looked(tmp_path: Path) -> None:
    result = run_cli(
        "--worker-id", "worker-cpu-8080", "--model", "org/missing:m.gguf", "--port", "8080",
        env={"XDG_CACHE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 3
    line = one_line_error(result)
    assert str(tmp_path / "rbee" / "models" / "org-missing-m.gguf") in line
    assert "org/missing:m.gguf" in line


@pytest.mark.behavior("ERR-016")
def test_a_port_in_use_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--threads", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    # The start-up log comes first (it binds before the model loads); then one refusal.
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"llm-worker-rbee: error: --port {port}: cannot listen on 127.0.0.1:{port}: "
        "it is already in use"
    ], result.stderr


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("nosuch.invalid", "cannot listen there: "),
        ("127.0.0.1,::1", "it takes one address (llama-server's comma-separated list"),
    ],
)
@pytest.mark.behavior("ERR-016")
def test_a_host_that_does_not_resolve_is_one_line_naming_the_flag(host: str, says: str) -> None:
    """A name that resolves to nothing, or llama-server's list of hosts: exit 2 and one line
    naming --host, as a port in use gets, not a traceback from the socket layer."""
    result = run_cli("serve", "--host", host, "--insecure", "--port", "0", "--threads", "1")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"llm-worker-rbee: error: --host {host}: ")
    assert says in errors[0]

"""`llm-worker-rbee inspect-model`, and `serve` refusing a bad model with exit 3 and one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_worker_rbee.cli import main
from llm_worker_rbee.inspection.bundled import bundled_model_path
from tests.gguf_factory import bundled_prefix, write_model

BUNDLED = bundled_model_path()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- inspect-model ---------------------------------------------------------------------------


@pytest.mark.behavior("LOAD-021")
def test_text_report_of_the_bundled_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect-model", str(BUNDLED))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"file            {BUNDLED} (241.39 MiB, GGUF v3)",
        "name            Gemma 3 270m",
        "architecture    gemma3",
        "parameters      268.1M (268098176)",
        "quantization    Q4_K_M",
        "context length  32768 tokens (trained)",
        "shape           18 layers, 640 wide, 4 heads / 1 KV heads, 262144 vocab, "
        "512 sliding window",
        "chat template   no",
        "memory for      --ctx-size 4096 --slots 4 --batch-size 512 (KV cache f16)",
        # One KV pool (serve's default mode): its masks span all 4096 cells.
        "  on the CPU    RAM 379.34 MiB: weights 235.16 MiB, KV cache 72.00 MiB, compute 72.18 MiB",
        "  on a GPU      VRAM 855.34 MiB: weights 235.16 MiB, KV cache 72.00 MiB, "
        "compute 36.18 MiB, CUDA 512.00 MiB; RAM 207.25 MiB",
    ]


@pytest.mark.behavior("LOAD-021")
def test_json_report_follows_ctx_size_and_slots(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "inspect-model", str(BUNDLED), "--json", "--ctx-size", "8192", "--slots", "2"
    )
    report = json.loads(out)
    assert code == 0
    assert {k: report[k] for k in ("architecture", "supported", "parameters")} == {
        "architecture": "gemma3",
        "supported": True,
        "parameters": 268_098_176,
    }
    assert (report["quantization"], report["context_length"], report["chat_template"]) == (
        "Q4_K_M",
        32768,
        False,
    )
    memory = report["memory"]
    assert (memory["ctx_size"], memory["slots"]) == (8192, 2)
    assert memory["cpu"]["kv_cpu"] == 144 << 20  # twice the 4096-token cache
    assert memory["gpu_all_layers"]["n_gpu_layers"] == 19
    assert report["tensor_types"]["Q8_0"] == 179_824_640


@pytest.mark.behavior("LOAD-021")
def test_chat_template_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_model(tmp_path / "tiny.gguf", chat_template="{{ messages }}")
    code, out, _ = run(capsys, "inspect-model", str(tmp_path), "--json")
    report = json.loads(out)
    assert (code, report["chat_template"], report["quantization"]) == (0, True, "F32")
    assert report["path"] == str(tmp_path / "tiny.gguf")


@pytest.mark.behavior("LOAD-021")
def test_unsupported_architecture_is_reported_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_model(tmp_path / "odd.gguf", arch="nosucharch")
    code, out, _ = run(capsys, "inspect-model", str(path))
    assert code == 0
    assert "architecture    nosucharch (NOT supported by the installed llama.cpp)" in out


@pytest.mark.behavior("LOAD-021")
def test_inspect_refuses_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"")
    assert run(capsys, "inspect-model", str(path)) == (
        3,
        "",
        f"llm-worker-rbee: error: model {path} is empty (0 bytes); an interrupted download?\n",
    )


@pytest.mark.behavior("LOAD-021")
def test_inspect_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "inspect-model", str(BUNDLED), "--slots", "0") == (
        2,
        "",
        "llm-worker-rbee: error: --slots: Input should be greater than or equal to 1 (got '0')\n",
    )


# -- serve refuses before anything loads -----------------------------------------------------


@pytest.mark.behavior("LOAD-012")
def test_serve_refuses_an_unknown_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_model(tmp_path / "odd.gguf", arch="nosucharch")
    code, out, err = run(capsys, "serve", "--model", str(path))
    assert (code, out) == (3, "")
    assert err.startswith(
        f"llm-worker-rbee: error: model {path} has architecture 'nosucharch', which the "
        "installed llama.cpp does not know"
    )
    assert err.count("\n") == 1


@pytest.mark.behavior("LOAD-012")
def test_serve_refuses_a_ref_that_is_not_in_the_models_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--model-ref", "hf:org/repo/m.gguf", "--models-dir", str(tmp_path)]
    assert run(capsys, *argv) == (
        3,
        "",
        f"llm-worker-rbee: error: --model-ref 'hf:org/repo/m.gguf' (in --models-dir {tmp_path}): "
        f"no file at {tmp_path}/org/repo/m.gguf (the directory {tmp_path}/org/repo does not "
        "exist either)\n",
    )


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return path


def _truncated(path: Path) -> Path:
    return bundled_prefix(path, 100_000_000)


def _garbage(path: Path) -> Path:
    path.write_bytes(bytes((i * 131) % 256 for i in range(4096)))
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated, "is truncated: its tensor data needs 253113024 bytes but the file has "
         "100000000 (40%); an interrupted download?"),
        (_socket, "is a socket, not a model file"),
        (_garbage, r"is not a GGUF file (it starts with b'\x00\x83\x06\x89\x0c\x8f\x12\x95')"),
    ],
    ids=["truncated", "socket", "garbage"],
)  # fmt: skip
@pytest.mark.behavior("LOAD-012")
def test_serve_process_exits_3_with_one_line(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path / "model.gguf")
    done = subprocess.run(
        [sys.executable, "-m", "llm_worker_rbee", "serve", "--model", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == f"llm-worker-rbee: error: model {path} {reason}\n"

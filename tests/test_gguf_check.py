"""GGUF validation: every way a file can be wrong gets its own kind and its own one line."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest

from llm_worker_rbee.inspection import gguf_check
from llm_worker_rbee.inspection.architectures import supported_architectures
from llm_worker_rbee.inspection.bundled import bundled_model_path
from llm_worker_rbee.inspection.gguf_check import ArrayValue, GgufError, read_gguf, validate_gguf
from tests.gguf_factory import arch_kv, bundled_prefix, one_tensor, raw_gguf, write_model

ALL = frozenset({"llama", "gemma3", "clip"})
F32 = gguf.GGMLQuantizationType.F32
U32 = gguf.GGUFValueType.UINT32


def refusal(path: Path, supported: frozenset[str] = ALL) -> GgufError:
    with pytest.raises(GgufError) as caught:
        validate_gguf(path, supported)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"model {path} ")
    return caught.value


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "model.gguf"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


# -- files that are not what they claim to be ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind", "reason"),
    [
        (lambda p: p, "missing", "does not exist"),
        (lambda p: write(p, b""), "empty", "is empty (0 bytes); an interrupted download?"),
        (lambda p: (p.mkdir(), p)[1], "not_a_file", "is a directory, not a model file"),
        (
            lambda p: (os.mkfifo(p), p)[1],
            "not_a_file",
            "is a named pipe, not a model file",
        ),
    ],
    ids=["missing", "zero-byte", "directory", "fifo"],
)
@pytest.mark.behavior("LOAD-005")
def test_not_a_model_file(tmp_path: Path, make: Any, kind: str, reason: str) -> None:
    path = make(tmp_path / "model.gguf")
    error = refusal(path)
    assert (error.kind, str(error)) == (kind, f"model {path} {reason}")


@pytest.mark.behavior("LOAD-005")
def test_a_socket_is_named_as_such(unix_socket: Path) -> None:
    error = refusal(unix_socket)
    assert (error.kind, str(error)) == (
        "not_a_file",
        f"model {unix_socket} is a socket, not a model file",
    )


@pytest.mark.behavior("LOAD-005")
def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, which chmod cannot lock out: the open itself is refused.
    path = write_model(tmp_path / "model.gguf")

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gguf_check, "open", denied, raising=False)
    error = refusal(path)
    assert (error.kind, str(error)) == (
        "unreadable",
        f"model {path} is not readable by this user (permission denied)",
    )


LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"
NOT_GGUF = [
    (bytes(range(7, 71)), r"is not a GGUF file (it starts with b'\x07\x08\t\n\x0b\x0c\r\x0e')"),
    (LFS, "is a Git LFS pointer, not the model (run `git lfs pull`)"),
    (b"<!DOCTYPE html><html>Not Found</html>", "is an HTML page, not a model (a failed download?)"),
    (b'{"error": "unauthorized"}', "is a JSON document, not a model"),
    (b"tjgg" + bytes(60), "is an old GGJT file; convert it to GGUF"),
]


@pytest.mark.parametrize(
    ("content", "reason"), NOT_GGUF, ids=["garbage", "lfs-pointer", "html", "json", "ggjt"]
)
@pytest.mark.behavior("LOAD-005")
def test_not_gguf(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path / "model.gguf", content)
    error = refusal(path)
    assert (error.kind, str(error)) == ("not_gguf", f"model {path} {reason}")


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (1, "is GGUF version 1, too old; llama.cpp reads versions 2 and 3"),
        (4, "is GGUF version 4; this llama.cpp reads versions 2 and 3 only"),
        (0x03000000, "is a big-endian GGUF; llama.cpp here reads little-endian files only"),
    ],
)
@pytest.mark.behavior("LOAD-005")
def test_wrong_version(tmp_path: Path, version: int, reason: str) -> None:
    data = bytearray(write_model(tmp_path / "good.gguf").read_bytes())
    data[4:8] = struct.pack("<I", version)
    path = write(tmp_path / "model.gguf", bytes(data))
    error = refusal(path)
    assert (error.kind, str(error)) == ("version", f"model {path} {reason}")


@pytest.mark.behavior("LOAD-005")
def test_big_endian_file_from_the_writer(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", endianess=gguf.GGUFEndian.BIG)
    assert refusal(path).kind == "version"


@pytest.mark.behavior("LOAD-005")
def test_version_2_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "v2.gguf",
        raw_gguf(version=2, kv=arch_kv(), tensors=one_tensor(), data=bytes(512)),
    )
    assert read_gguf(path).version == 2


# -- truncated downloads ---------------------------------------------------------------------


@pytest.mark.behavior("LOAD-005")
def test_truncated_bundled_model_in_the_tensor_data(tmp_path: Path) -> None:
    full = bundled_model_path().stat().st_size
    path = bundled_prefix(tmp_path / "model.gguf", full // 2)
    error = refusal(path)
    assert (error.kind, str(error)) == (
        "truncated",
        f"model {path} is truncated: its tensor data needs {full} bytes but the file has "
        f"{full // 2} (50%); an interrupted download?",
    )


@pytest.mark.behavior("LOAD-005")
def test_truncated_bundled_model_near_the_end(tmp_path: Path) -> None:
    full = bundled_model_path().stat().st_size
    path = bundled_prefix(tmp_path / "model.gguf", full - 4096)
    error = refusal(path)
    assert error.kind == "truncated"
    assert f"needs {full} bytes but the file has {full - 4096} (100%)" in str(error)


@pytest.mark.behavior("LOAD-005")
def test_truncated_bundled_model_in_the_vocabulary(tmp_path: Path) -> None:
    path = bundled_prefix(tmp_path / "model.gguf", 1_000_000)
    error = refusal(path)
    assert (error.kind, str(error)) == (
        "truncated",
        f"model {path} is truncated: the file ends at byte 1000000 inside metadata "
        "'tokenizer.ggml.tokens' (an interrupted download?)",
    )


@pytest.mark.behavior("LOAD-005")
def test_truncated_bundled_model_in_the_tensor_table(tmp_path: Path) -> None:
    data_offset = read_gguf(bundled_model_path()).data_offset
    path = bundled_prefix(tmp_path / "model.gguf", data_offset - 3000)
    error = refusal(path)
    assert error.kind == "truncated"
    assert "inside the tensor table ('blk." in str(error)


@pytest.mark.behavior("LOAD-005")
def test_truncated_inside_the_header(tmp_path: Path) -> None:
    path = bundled_prefix(tmp_path / "model.gguf", 10)
    error = refusal(path)
    assert (error.kind, str(error)) == (
        "truncated",
        f"model {path} is truncated: 10 bytes, shorter than a GGUF header (24)",
    )


@pytest.mark.behavior("LOAD-005")
def test_every_cut_of_a_small_model_is_refused_as_truncated(tmp_path: Path) -> None:
    data = write_model(tmp_path / "good.gguf").read_bytes()
    good = read_gguf(tmp_path / "good.gguf")
    end_of_data = max(t.offset + t.n_bytes for t in good.tensors)
    # Every few bytes through the header and tables, then through the tensor data.
    cuts = [*range(24, good.data_offset, 7), *range(good.data_offset, end_of_data, 1021)]
    for size in cuts:
        path = write(tmp_path / "cut.gguf", data[:size])
        assert refusal(path).kind == "truncated", size


# -- corrupt tables --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kv", "tensors", "reason"),
    [
        (
            [*arch_kv(), ("odd", 99, b"")],
            one_tensor(),
            "is corrupt: metadata 'odd' has unknown value type 99",
        ),
        (
            [*arch_kv(), ("llama.block_count", U32, struct.pack("<I", 2))],
            one_tensor(),
            "is corrupt: metadata key 'llama.block_count' appears twice",
        ),
        (
            [*arch_kv(), ("big", gguf.GGUFValueType.STRING, struct.pack("<Q", 1 << 60))],
            one_tensor(),
            "is corrupt: metadata 'big' claims a 1152921504606846976-byte string in a "
            "SIZE-byte file",
        ),
        (arch_kv(), one_tensor(kind=77), "is corrupt: tensor 'token_embd.weight' has unknown "
         "type 77 (written by a newer tool?)"),
        (arch_kv(), [("t", [32, 4], F32, 0), ("t", [32], F32, 512)], "is corrupt: tensor 't' "
         "appears twice"),
        (arch_kv(), [("t", [1, 1, 1, 1, 1], F32, 0)], "is corrupt: tensor 't' has 5 dimensions"),
        (arch_kv(), [("t", [32], F32, 3)], "is corrupt: tensor 't' data offset 3 is not aligned"),
        (arch_kv(), [*one_tensor(gguf.GGMLQuantizationType.Q8_0), ("x", [33], 8, 64)],
         "is corrupt: tensor 'x' row of 33 is not a multiple of 32"),
        (arch_kv(), [], "is corrupt: it holds no tensors"),
    ],
    ids=["value-type", "duplicate-key", "absurd-string", "tensor-type", "duplicate-tensor",
         "dimensions", "alignment", "block-size", "no-tensors"],
)  # fmt: skip
@pytest.mark.behavior("LOAD-005")
def test_corrupt_tables(
    tmp_path: Path, kv: list[tuple[str, int, bytes]], tensors: Any, reason: str
) -> None:
    path = write(tmp_path / "model.gguf", raw_gguf(kv=kv, tensors=tensors, data=bytes(512)))
    error = refusal(path)
    size = path.stat().st_size
    expected = f"model {path} {reason}".replace("SIZE", str(size))
    assert (error.kind, str(error)) == ("corrupt", expected)


@pytest.mark.behavior("LOAD-005")
def test_garbage_counts_are_corrupt_not_truncated(tmp_path: Path) -> None:
    # A huge kv count over random bytes: reads run far past the end, which no cut file does.
    junk = bytes((i * 7919) % 251 for i in range(4096))
    path = write(tmp_path / "model.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1 << 40) + junk)
    assert refusal(path).kind == "corrupt"


@pytest.mark.parametrize(
    ("kv", "reason"),
    [
        ([], "has no general.architecture in its metadata"),
        (arch_kv()[:2], "has no llama.embedding_length in its metadata"),
    ],
)
@pytest.mark.behavior("LOAD-005")
def test_missing_metadata(tmp_path: Path, kv: list[tuple[str, int, bytes]], reason: str) -> None:
    path = write(tmp_path / "model.gguf", raw_gguf(kv=kv, tensors=one_tensor(), data=bytes(512)))
    error = refusal(path)
    assert (error.kind, str(error)) == ("metadata", f"model {path} {reason}")


# -- architecture ----------------------------------------------------------------------------


@pytest.mark.behavior("LOAD-006")
def test_unknown_architecture(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", arch="nosucharch")
    error = refusal(path, supported_architectures())
    assert error.kind == "architecture"
    assert str(error).startswith(
        f"model {path} has architecture 'nosucharch', which the installed llama.cpp does not "
        "know (llama-cpp-python "
    )


@pytest.mark.behavior("LOAD-005")
def test_a_vision_projector_is_not_a_language_model(tmp_path: Path) -> None:
    path = write_model(tmp_path / "mmproj.gguf", arch="clip")
    error = refusal(path)
    assert str(error) == (
        f"model {path} is a vision projector (mmproj), not a language model ('clip')"
    )


@pytest.mark.behavior("LOAD-006")
def test_supported_architectures_come_from_the_installed_library() -> None:
    support = supported_architectures()
    assert support.source.endswith(("libllama.so", "libllama.dylib", "llama.dll"))
    assert {"llama", "gemma3", "qwen3", "gpt-oss"} <= support.names
    assert {"bert", "qwen2"} <= support.names  # merged by the linker into longer names' tails
    assert "(unknown)" not in support.names and "general.architecture" not in support.names
    assert len(support) > 50 and "gemma3" in support and "nosucharch" not in support


@pytest.mark.behavior("LOAD-006")
def test_supported_architectures_fall_back_to_the_gguf_list(tmp_path: Path) -> None:
    support = supported_architectures(tmp_path / "libllama.so")
    assert support.source.startswith("gguf ") and "MODEL_ARCH_NAMES" in support.source
    assert support.names == frozenset(gguf.MODEL_ARCH_NAMES.values())


@pytest.mark.behavior("LOAD-006")
def test_architecture_table_is_the_longest_run_of_names(tmp_path: Path) -> None:
    lib = tmp_path / "libllama.so"
    table = b"\x00".join(b"clip llama llama4 modern-bert rwkv6qwen2 a-b c_d e f g h".split())
    noise = b"\x00\x00llama\x00text.with.dots\x00"
    lib.write_bytes(noise + b"\x01\x02token_embd.weight\x00" + table + b"\x00(unknown)\x00")
    support = supported_architectures(lib)
    assert support.source == str(lib)
    assert support.names == {
        "clip",
        "llama",
        "llama4",
        "modern-bert",
        "rwkv6qwen2",
        "a-b",
        "c_d",
        "e",
        "f",
        "g",
        "h",
        "bert",
        "qwen2",
    }


# -- what a good file says -------------------------------------------------------------------


@pytest.mark.behavior("LOAD-005")
def test_reads_what_the_gguf_package_reads(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", n_head_kv=[1, 2], chat_template="{{ x }}")
    summary = validate_gguf(path, ALL)
    reference = gguf.GGUFReader(path)
    assert [(t.name, t.offset, t.n_bytes, t.n_elements) for t in summary.tensors] == [
        (t.name, t.data_offset, t.n_bytes, t.n_elements) for t in reference.tensors
    ]
    assert summary.data_offset == reference.data_offset
    assert summary.architecture == "llama" and summary.version == 3
    assert summary.arch_key("attention.head_count_kv") == ArrayValue(
        gguf.GGUFValueType.INT32, 2, (1, 2)
    )
    assert summary.get("tokenizer.chat_template") == "{{ x }}"
    tokens = summary.get("tokenizer.ggml.tokens")
    assert tokens.count == 96 and tokens.values[:2] == ("t0", "t1")


@pytest.mark.behavior("LOAD-005")
def test_the_bundled_model_passes() -> None:
    summary = validate_gguf(bundled_model_path())
    assert summary.architecture == "gemma3"
    assert len(summary.tensors) == 236
    assert sum(t.n_elements for t in summary.tensors) == 268_098_176  # llama_model_n_params
    tokens = summary.get("tokenizer.ggml.tokens")
    assert tokens.count == 262_144 and tokens.values is None  # long arrays are skipped

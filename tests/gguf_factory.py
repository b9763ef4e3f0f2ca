"""Small GGUF files for tests: well-formed ones from `gguf.GGUFWriter`, broken ones by hand."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from llm_worker_rbee.engine.bundled import bundled_model_path


def write_model(
    path: Path,
    *,
    arch: str = "llama",
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | Sequence[int] = 2,
    n_vocab: int = 96,
    tied: bool = False,
    chat_template: str | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """A tiny llama-shaped model: f32 tensors, real metadata, valid layout."""
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    writer.add_block_count(n_layer)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(2 * n_embd)
    writer.add_head_count(n_head)
    if isinstance(n_head_kv, int):
        writer.add_head_count_kv(n_head_kv)
    else:
        writer.add_array(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch), list(n_head_kv))
    writer.add_context_length(2048)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_list([f"t{i}" for i in range(n_vocab)])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))

    tensor("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        tensor(f"blk.{i}.attn_norm.weight", n_embd)
        tensor(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", 2 * n_embd, n_embd)
    tensor("output_norm.weight", n_embd)
    if not tied:
        tensor("output.weight", n_vocab, n_embd)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def raw_gguf(
    *,
    version: int = 3,
    kv: Sequence[tuple[str, int, bytes]] = (),
    tensors: Sequence[tuple[str, Sequence[int], int, int]] = (),
    data: bytes = b"",
) -> bytes:
    """A GGUF byte string written field by field, for layouts GGUFWriter refuses to make.

    Args:
        kv: (key, value type, encoded value) triples.
        tensors: (name, dims, ggml type, relative offset) for each tensor info.
        data: what follows the tables, after padding to 32 bytes.
    """
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv)))
    for key, kind, value in kv:
        out += _string(key) + struct.pack("<I", kind) + value
    for name, dims, kind, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", kind, offset)
    out += bytes(-len(out) % 32)
    return bytes(out + data)


def string_value(text: str) -> bytes:
    return _string(text)


def arch_kv(arch: str = "llama") -> list[tuple[str, int, bytes]]:
    """The metadata every model needs: architecture, block count, embedding length."""
    u32 = gguf.GGUFValueType.UINT32
    return [
        ("general.architecture", gguf.GGUFValueType.STRING, _string(arch)),
        (f"{arch}.block_count", u32, struct.pack("<I", 1)),
        (f"{arch}.embedding_length", u32, struct.pack("<I", 32)),
    ]


def one_tensor(kind: int = gguf.GGMLQuantizationType.F32) -> list[tuple[str, list[int], int, int]]:
    return [("token_embd.weight", [32, 4], kind, 0)]


def bundled_prefix(path: Path, size: int) -> Path:
    """The first `size` bytes of the bundled model: a download cut off at `size`."""
    with open(bundled_model_path(), "rb") as source, open(path, "wb") as target:
        remaining = size
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 22))
            if not chunk:
                break
            target.write(chunk)
            remaining -= len(chunk)
    return path


def bundled_copy(path: Path) -> Path:
    shutil.copyfile(bundled_model_path(), path)
    return path

"""Small GGUF files for tests: well-formed ones from `gguf.GGUFWriter`, broken ones by hand."""

from __future__ import annotations

import mmap
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from llm_worker_rbee.inspection.bundled import bundled_model_path


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


# Byte sizes of GGUF's fixed-size value types (gguf.GGUFValueType): all but STRING and ARRAY.
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"


def _skip_value(data: mmap.mmap, pos: int, kind: int) -> int:
    if kind == _STRING:
        return pos + 8 + int(struct.unpack_from("<Q", data, pos)[0])
    if kind == _ARRAY:
        item, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item in _SCALAR_SIZE:
            return pos + count * _SCALAR_SIZE[item]
        for _ in range(count):
            pos = _skip_value(data, pos, item)
        return pos
    return pos + _SCALAR_SIZE[kind]


def with_chat_template(source: Path, target: Path, template: str) -> Path:
    """A copy of the GGUF `source` whose `tokenizer.chat_template` is `template`, as
    gguf's `gguf-new-metadata --chat-template-file` makes it. Written here because that
    tool (gguf.GGUFReader) parses the 262k-token vocabulary into numpy parts one by one:
    over a minute for the bundled model, where this walks the header in a fraction of a
    second and copies the tensor data as it is."""
    with open(source, "rb") as file:
        data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    with data:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
        pos, alignment, kept, count = 24, 32, bytearray(), 0
        for _ in range(n_kv):
            start = pos
            size = struct.unpack_from("<Q", data, pos)[0]
            key = bytes(data[pos + 8 : pos + 8 + size]).decode()
            kind = struct.unpack_from("<I", data, pos + 8 + size)[0]
            if key == "general.alignment":
                alignment = struct.unpack_from("<I", data, pos + 12 + size)[0]
            pos = _skip_value(data, pos + 12 + size, kind)
            if key != CHAT_TEMPLATE_KEY:
                kept += data[start:pos]
                count += 1
        kept += _string(CHAT_TEMPLATE_KEY) + struct.pack("<I", _STRING) + _string(template)
        infos_start = pos
        for _ in range(n_tensors):
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            pos += 4 + 8 * struct.unpack_from("<I", data, pos)[0] + 4 + 8
        header = struct.pack("<4sIQQ", magic, version, n_tensors, count + 1) + kept
        header += data[infos_start:pos]
        with open(target, "wb") as out:
            out.write(header + bytes(-len(header) % alignment))
            out.write(data[pos + (-pos % alignment) :])
    return target

"""Checks a GGUF file before llama.cpp opens it, and reads what the worker needs from it.

llama.cpp answers a bad file with a NULL model and a log line at best, and with a crash at
worst (a tensor that points past the end of a truncated download). Every check here is
done in Python on the raw bytes, with a bounds check on every read, so each way a file can
be wrong gets its own one-line `GgufError` (the CLI exits 3 with it).

The reader is a small bounds-checked walker over the format, using the `gguf` package's
constants (value types, tensor types and their block sizes, file types). `gguf.GGUFReader`
itself builds a NumPy view for every element of every array, which takes ~25 s on the
bundled model's 262k-token vocabulary; this walker skips large arrays in a few hundred ms.

Whether llama.cpp knows the file's architecture is asked of `architectures.py`.
"""

from __future__ import annotations

import mmap
import stat
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from llm_worker_rbee.inspection.architectures import architecture_problem

SUPPORTED_VERSIONS = (2, 3)
"""GGUF versions llama.cpp reads (version 1 was dropped; 3 is current)."""

_U64 = struct.Struct("<Q")
_SMALL_ARRAY = 1024
# A read that would end this far past the end of the file is garbage, not a cut-off file:
# the largest single metadata item in real models (a vocabulary's scores) is a few MiB.
_PLAUSIBLE_ITEM = 64 << 20  # arrays up to this length keep their values (per-layer settings)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_SCALARS: dict[gguf.GGUFValueType, str] = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}
# Files that are often saved under a .gguf name by mistake, by their first bytes.
_LOOKALIKES: tuple[tuple[bytes, str], ...] = (
    (b"version https://git-lfs", "a Git LFS pointer, not the model (run `git lfs pull`)"),
    (b"<!DOCTYPE", "an HTML page, not a model (a failed download?)"),
    (b"<html", "an HTML page, not a model (a failed download?)"),
    (b"{", "a JSON document, not a model"),
    (b"PK\x03\x04", "a zip archive, not a model"),
    (b"\x1f\x8b", "a gzip archive, not a model; unpack it first"),
    (b"lmgg", "an old GGML file; convert it to GGUF"),
    (b"tjgg", "an old GGJT file; convert it to GGUF"),
    (b"fmgg", "an old GGMF file; convert it to GGUF"),
)


class GgufError(Exception):
    """The file cannot be served; `kind` names the check that failed, `str()` is one line."""

    def __init__(self, kind: str, path: Path, reason: str) -> None:
        super().__init__(f"model {path} {reason}")
        self.kind = kind
        self.path = path


@dataclass(frozen=True, slots=True)
class ArrayValue:
    """A metadata array: its element type, its length, and its values when it is short."""

    item_type: gguf.GGUFValueType
    count: int
    values: tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    ggml_type: gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int  # absolute, in the file


@dataclass(frozen=True)
class GgufSummary:
    """What a structurally sound GGUF file says about itself."""

    path: Path
    file_size: int
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    architecture: str

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_key(self, suffix: str, default: Any = None) -> Any:
        """`{architecture}.{suffix}`, e.g. `arch_key("block_count")`."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)


class _OutOfFile(Exception):
    def __init__(self, where: str, needed: int) -> None:
        super().__init__(where)
        self.where = where
        self.needed = needed


class _Corrupt(Exception):
    pass


class _Walker:
    """Reads little-endian GGUF fields from a buffer; every read is bounds-checked."""

    def __init__(self, buffer: mmap.mmap | bytes) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.where = "the header"

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.size:
            raise _OutOfFile(self.where, start + n)
        self.pos = start + n
        return start

    def scalar(self, kind: gguf.GGUFValueType) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack_from(fmt, self.buffer, self.take(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int(self.scalar(gguf.GGUFValueType.UINT32))

    def u64(self) -> int:
        return int(self.scalar(gguf.GGUFValueType.UINT64))

    def string(self) -> str:
        n = self.u64()
        if n > self.size:
            raise _Corrupt(f"{self.where} claims a {n}-byte string in a {self.size}-byte file")
        start = self.take(n)
        return bytes(self.buffer[start : start + n]).decode("utf-8", "replace")

    def value_type(self) -> gguf.GGUFValueType:
        raw = self.u32()
        try:
            return gguf.GGUFValueType(raw)
        except ValueError:
            raise _Corrupt(f"{self.where} has unknown value type {raw}") from None

    def value(self, kind: gguf.GGUFValueType) -> Any:
        if kind == gguf.GGUFValueType.STRING:
            return self.string()
        if kind == gguf.GGUFValueType.ARRAY:
            return self.array()
        return self.scalar(kind)

    def array(self) -> ArrayValue:
        item = self.value_type()
        count = self.u64()
        if item == gguf.GGUFValueType.ARRAY:
            raise _Corrupt(f"{self.where} is an array of arrays")
        keep = count <= _SMALL_ARRAY
        if item == gguf.GGUFValueType.STRING and not keep:
            self._skip_strings(count)
            return ArrayValue(item, count, None)
        if item in _SCALARS and not keep:
            width = struct.calcsize(_SCALARS[item])
            if count * width > self.size:
                raise _Corrupt(f"{self.where} claims {count} elements in a {self.size}-byte file")
            self.take(count * width)
            return ArrayValue(item, count, None)
        values = [self.value(item) for _ in range(count)]
        return ArrayValue(item, count, tuple(values) if keep else None)

    def _skip_strings(self, count: int) -> None:
        """Steps over `count` strings without decoding them (a vocabulary is 262k)."""
        unpack, buffer, size, pos = _U64.unpack_from, self.buffer, self.size, self.pos
        for _ in range(count):
            if pos + 8 > size:
                raise _OutOfFile(self.where, pos + 8)
            pos += 8 + unpack(buffer, pos)[0]
            if pos > size:
                raise _OutOfFile(self.where, pos)
        self.pos = pos


def validate_gguf(path: Path, supported: Collection[str] | None = None) -> GgufSummary:
    """Every check before llama.cpp opens `path`; returns what the file says about itself.

    Args:
        path: the model file (already resolved, see `model_path`).
        supported: architectures the installed llama.cpp knows; None reads them from
            the library (`architectures.supported_architectures()`).

    Raises:
        GgufError: one line naming the file and what is wrong with it.
    """
    summary = read_gguf(path)
    problem = architecture_problem(summary.architecture, supported)
    if problem is not None:
        raise GgufError("architecture", path, problem)
    return summary


def read_gguf(path: Path) -> GgufSummary:
    """Checks the file's kind, header, metadata and tensor table, and that the data fits.

    Raises:
        GgufError: kinds `missing`, `not_a_file`, `unreadable`, `empty`, `not_gguf`,
            `version`, `truncated`, `corrupt`, `metadata`.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise GgufError("missing", path, "does not exist") from None
    except OSError as exc:
        raise GgufError("unreadable", path, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise GgufError("not_a_file", path, f"is {_file_kind(info.st_mode)}, not a model file")
    if info.st_size == 0:
        raise GgufError("empty", path, "is empty (0 bytes); an interrupted download?")
    try:
        with open(path, "rb") as handle, _map(handle, info.st_size) as buffer:
            return _read(path, buffer)
    except PermissionError:
        raise GgufError(
            "unreadable", path, "is not readable by this user (permission denied)"
        ) from None
    except OSError as exc:
        raise GgufError("unreadable", path, f"cannot be read ({exc.strerror or exc})") from None


def _map(handle: Any, size: int) -> mmap.mmap:
    return mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _read(path: Path, buffer: mmap.mmap) -> GgufSummary:
    size = len(buffer)
    head = bytes(buffer[:24])
    if head[:4] != b"GGUF":
        reason = next((what for magic, what in _LOOKALIKES if head.startswith(magic)), None)
        raise GgufError(
            "not_gguf",
            path,
            f"is {reason}" if reason else f"is not a GGUF file (it starts with {head[:8]!r})",
        )
    if size < 24:
        raise GgufError(
            "truncated", path, f"is truncated: {size} bytes, shorter than a GGUF header (24)"
        )
    version = struct.unpack_from("<I", buffer, 4)[0]
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            reason = "is a big-endian GGUF; llama.cpp here reads little-endian files only"
        elif version < SUPPORTED_VERSIONS[0]:
            reason = f"is GGUF version {version}, too old; llama.cpp reads versions 2 and 3"
        else:
            reason = f"is GGUF version {version}; this llama.cpp reads versions 2 and 3 only"
        raise GgufError("version", path, reason)
    walker = _Walker(buffer)
    walker.take(8)
    try:
        return _read_tables(path, walker, version)
    except _OutOfFile as exc:
        if exc.needed > size + _PLAUSIBLE_ITEM:  # no real field is that large: garbage
            raise GgufError(
                "corrupt", path, f"is corrupt: {exc.where} reaches byte {exc.needed}"
            ) from None
        raise GgufError(
            "truncated",
            path,
            f"is truncated: the file ends at byte {size} inside {exc.where} "
            "(an interrupted download?)",
        ) from None
    except _Corrupt as exc:
        raise GgufError("corrupt", path, f"is corrupt: {exc}") from None


def _read_tables(path: Path, walker: _Walker, version: int) -> GgufSummary:
    n_tensors = walker.u64()
    n_kv = walker.u64()
    metadata: dict[str, Any] = {}
    for index in range(n_kv):
        walker.where = f"metadata entry #{index}"
        key = walker.string()
        walker.where = f"metadata {key!r}"
        if key in metadata:
            raise _Corrupt(f"metadata key {key!r} appears twice")
        metadata[key] = walker.value(walker.value_type())
    raw: list[tuple[str, int, tuple[int, ...], int]] = []
    for index in range(n_tensors):
        walker.where = f"the tensor table (tensor #{index})"
        name = walker.string()
        walker.where = f"the tensor table ({name!r})"
        n_dims = walker.u32()
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(walker.u64() for _ in range(n_dims))
        kind = walker.u32()
        raw.append((name, kind, shape, walker.u64()))
    alignment = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-walker.pos // alignment) * alignment
    tensors = _tensor_infos(raw, data_offset, alignment)
    _check_data_fits(path, tensors, walker.size)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GgufError("metadata", path, "has no general.architecture in its metadata")
    for suffix in ("block_count", "embedding_length"):
        if not isinstance(metadata.get(f"{arch}.{suffix}"), int):
            raise GgufError("metadata", path, f"has no {arch}.{suffix} in its metadata")
    return GgufSummary(path, walker.size, version, metadata, tensors, data_offset, arch)


def _tensor_infos(
    raw: list[tuple[str, int, tuple[int, ...], int]], data_offset: int, alignment: int
) -> tuple[TensorInfo, ...]:
    seen: set[str] = set()
    tensors: list[TensorInfo] = []
    for name, kind, shape, relative in raw:
        if name in seen:
            raise _Corrupt(f"tensor {name!r} appears twice")
        seen.add(name)
        try:
            ggml_type = gguf.GGMLQuantizationType(kind)
            block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise _Corrupt(
                f"tensor {name!r} has unknown type {kind} (written by a newer tool?)"
            ) from None
        if shape[0] % block:
            raise _Corrupt(f"tensor {name!r} row of {shape[0]} is not a multiple of {block}")
        if relative % alignment:
            raise _Corrupt(f"tensor {name!r} data offset {relative} is not aligned")
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        n_bytes = n_elements // block * type_size
        tensors.append(
            TensorInfo(name, ggml_type, shape, n_elements, n_bytes, data_offset + relative)
        )
    return tuple(tensors)


def _check_data_fits(path: Path, tensors: tuple[TensorInfo, ...], have: int) -> None:
    if not tensors:
        raise GgufError("corrupt", path, "is corrupt: it holds no tensors")
    end = max(t.offset + t.n_bytes for t in tensors)
    if end > have:
        raise GgufError(
            "truncated",
            path,
            f"is truncated: its tensor data needs {end} bytes but the file has {have} "
            f"({100 * have / end:.0f}%); an interrupted download?",
        )

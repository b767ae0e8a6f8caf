"""Write ``torch.save``-format files without torch -- for tests only.

The pickles are emitted opcode by opcode (protocol 2, as ``torch.save``
writes them) by a tiny writer, so the files name torch's globals
(``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ...) exactly as
torch does, without importing torch and without Python's ``Pickler`` checking
that those globals exist. The same writer builds the malicious files the
reader must refuse.

Object model understood by :func:`dump_pickle`:
``None``, bool, int, float, str, tuple, list, dict, :class:`Global`
(a bare ``module.name`` reference), :class:`Call` (``func(*args)``, the
REDUCE opcode), :class:`Persistent` (a persistent id, BINPERSID),
:class:`ODict` (``collections.OrderedDict`` with optional BUILD state).
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    func: Any
    args: tuple


@dataclass(frozen=True)
class Persistent:
    pid: tuple


@dataclass
class ODict:
    items: List[Tuple[Any, Any]]
    state: Optional[dict] = None


def _encode_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = v.bit_length() // 8 + 1
    raw = v.to_bytes(n, "little", signed=True)
    assert len(raw) < 256
    return b"\x8a" + bytes([len(raw)]) + raw


def _emit(obj: Any, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif obj is True:
        out += b"\x88"
    elif obj is False:
        out += b"\x89"
    elif isinstance(obj, int):
        out += _encode_int(obj)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, tuple):
        if len(obj) == 0:
            out += b")"
        elif len(obj) <= 3:
            for x in obj:
                _emit(x, out)
            out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(obj)]
        else:
            out += b"("
            for x in obj:
                _emit(x, out)
            out += b"t"
    elif isinstance(obj, list):
        out += b"]"
        if obj:
            out += b"("
            for x in obj:
                _emit(x, out)
            out += b"e"
    elif isinstance(obj, dict):
        out += b"}"
        if obj:
            out += b"("
            for k, v in obj.items():
                _emit(k, out)
                _emit(v, out)
            out += b"u"
    elif isinstance(obj, Global):
        out += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    elif isinstance(obj, Call):
        _emit(obj.func, out)
        _emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, Persistent):
        _emit(obj.pid, out)
        out += b"Q"
    elif isinstance(obj, ODict):
        _emit(Call(Global("collections", "OrderedDict"), ()), out)
        if obj.items:
            out += b"("
            for k, v in obj.items:
                _emit(k, out)
                _emit(v, out)
            out += b"u"
        if obj.state is not None:
            _emit(obj.state, out)
            out += b"b"
    else:
        raise TypeError(f"test pickle writer cannot emit {type(obj).__name__}")


def dump_pickle(obj: Any) -> bytes:
    """Protocol-2 pickle bytes of ``obj`` (see the module docstring)."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    out += b"."
    return bytes(out)


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------

_STORAGE_NAMES = {
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


@dataclass
class BFloat16:
    """A float32 array to store as bfloat16 (its upper 16 bits)."""

    values: np.ndarray


@dataclass
class TensorView:
    """A view ``(offset, size, stride)`` into a shared 1-D ``storage`` array."""

    storage: np.ndarray
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


@dataclass
class Parameter:
    """Wrap a tensor in ``torch._utils._rebuild_parameter``."""

    data: Any


@dataclass
class _Collected:
    blobs: Dict[int, Tuple[str, str, np.ndarray]] = field(default_factory=dict)  # id -> (key, type, flat)
    keep: List[np.ndarray] = field(default_factory=list)


class _Builder:
    def __init__(self, *, legacy: bool, location: str, storage_module: str, rebuild: str) -> None:
        self.legacy = legacy
        self.location = location
        self.storage_module = storage_module
        self.rebuild = rebuild
        self.c = _Collected()

    def _key(self, n: int) -> str:
        # Legacy keys are str(storage._cdata) (large ints); zip keys count from 0.
        return str(94000000000000 + 64 * n) if self.legacy else str(n)

    def storage(self, flat: np.ndarray, type_name: str) -> Persistent:
        ident = id(flat)
        if ident not in self.c.blobs:
            self.c.keep.append(flat)
            self.c.blobs[ident] = (self._key(len(self.c.blobs)), type_name, flat)
        key = self.c.blobs[ident][0]
        pid: tuple = ("storage", Global(self.storage_module, type_name), key, self.location, int(flat.size))
        if self.legacy:
            pid = pid + (None,)
        return Persistent(pid)

    def tensor(self, storage: Persistent, offset: int, size: tuple, stride: tuple) -> Call:
        if self.rebuild == "v1":
            return Call(Global("torch._utils", "_rebuild_tensor"), (storage, offset, size, stride))
        return Call(
            Global("torch._utils", "_rebuild_tensor_v2"),
            (storage, offset, size, stride, False, ODict([])),
        )

    def convert(self, obj: Any) -> Any:
        if isinstance(obj, Parameter):
            return Call(Global("torch._utils", "_rebuild_parameter"), (self.convert(obj.data), True, ODict([])))
        if isinstance(obj, BFloat16):
            v = np.ascontiguousarray(obj.values, dtype=np.float32)
            flat = (v.reshape(-1).view(np.uint32) >> 16).astype(np.uint16)
            return self.tensor(self.storage(flat, "BFloat16Storage"), 0, v.shape, _c_strides(v.shape))
        if isinstance(obj, TensorView):
            return self.tensor(
                self.storage(obj.storage, _STORAGE_NAMES[obj.storage.dtype]), obj.offset, tuple(obj.size), tuple(obj.stride)
            )
        if isinstance(obj, np.ndarray):
            flat = np.ascontiguousarray(obj).reshape(-1).copy()
            return self.tensor(self.storage(flat, _STORAGE_NAMES[obj.dtype]), 0, obj.shape, _c_strides(obj.shape))
        if isinstance(obj, dict):
            return ODict([(k, self.convert(v)) for k, v in obj.items()], state={"_metadata": ODict([("", {"version": 1})])})
        return obj

    def storages(self) -> List[Tuple[str, str, np.ndarray]]:
        return sorted(self.c.blobs.values(), key=lambda t: t[0])


def _c_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def _raw(flat: np.ndarray, byteorder: str) -> bytes:
    return flat.astype(flat.dtype.newbyteorder("<" if byteorder == "little" else ">")).tobytes()


def save_zip(
    obj: Any,
    path: Path,
    *,
    archive: str = "archive",
    byteorder: Optional[str] = "little",
    location: str = "cpu",
    storage_module: str = "torch",
    rebuild: str = "v2",
    raw_pickle: Optional[bytes] = None,
) -> Path:
    """Write ``obj`` (dict of name -> array/TensorView/BFloat16/Parameter) in the zip format."""
    b = _Builder(legacy=False, location=location, storage_module=storage_module, rebuild=rebuild)
    data_pkl = raw_pickle if raw_pickle is not None else dump_pickle(b.convert(obj))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for key, _type, flat in b.storages():
            zf.writestr(f"{archive}/data/{key}", _raw(flat, byteorder or "little"))
        zf.writestr(f"{archive}/version", "3\n")
        zf.writestr(f"{archive}/.data/serialization_id", "0123456789")
    return path


def save_legacy(
    obj: Any,
    path: Path,
    *,
    location: str = "cpu",
    storage_module: str = "torch",
    rebuild: str = "v2",
    raw_pickle: Optional[bytes] = None,
    magic_pickle: Optional[bytes] = None,
) -> Path:
    """Write ``obj`` in the legacy (pre-1.6) stream format."""
    b = _Builder(legacy=True, location=location, storage_module=storage_module, rebuild=rebuild)
    main = raw_pickle if raw_pickle is not None else dump_pickle(b.convert(obj))
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    out = bytearray()
    out += magic_pickle if magic_pickle is not None else dump_pickle(LEGACY_MAGIC_NUMBER)
    out += dump_pickle(LEGACY_PROTOCOL_VERSION)
    out += dump_pickle(sys_info)
    out += main
    stor = b.storages()
    out += dump_pickle([key for key, _, _ in stor])
    for _key, _type, flat in stor:
        out += struct.pack("<q", flat.size) + _raw(flat, "little")
    Path(path).write_bytes(bytes(out))
    return path


def legacy_view_file(path: Path, root: np.ndarray, view_offset: int, view_size: int,
                     tensor_offset: int, size: tuple, stride: tuple) -> Path:
    """A legacy file whose one tensor ``"t"`` lives in a *storage view* (old torch)."""
    key = "140000"
    pid = ("storage", Global("torch", _STORAGE_NAMES[root.dtype]), key, "cpu", int(root.size),
           ("140001", view_offset, view_size))
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"),
                  (Persistent(pid), tensor_offset, size, stride, False, ODict([])))
    main = dump_pickle(ODict([("t", tensor)]))
    out = bytearray()
    out += dump_pickle(LEGACY_MAGIC_NUMBER) + dump_pickle(LEGACY_PROTOCOL_VERSION) + dump_pickle({"little_endian": True})
    out += main + dump_pickle([key])
    out += struct.pack("<q", root.size) + _raw(root, "little")
    Path(path).write_bytes(bytes(out))
    return path

"""An ONNX model's external data: locations checked, bytes read by us, handed to onnxruntime.

A tensor stored outside the model file names its file in
``TensorProto.external_data`` (key ``location``). Older onnxruntime versions
read whatever that names (``/etc/passwd``, ``../../secret``, a symbolic link
leading out). :func:`check_external_data` walks the model's protobuf (no
``onnx`` package needed: the few message fields that can hold tensors are
listed below) and refuses any location that is absolute, contains ``..``,
or does not resolve (links followed) to a regular file inside the model's
folder.

Fields walked (field numbers from onnx.proto): ModelProto.graph (7) and
.functions (25); GraphProto.node (1), .initializer (5), .sparse_initializer
(15); NodeProto.attribute (5); FunctionProto.node (7); AttributeProto.t (5),
.g (6), .tensors (10), .graphs (11), .sparse_tensor (22), .sparse_tensors (23);
SparseTensorProto.values (1), .indices (2); TensorProto.external_data (13),
StringStringEntryProto.key (1) / .value (2).

onnxruntime is never left to open a file by name (a file swapped between our
check and its read would be what runs): :func:`load_external_data` reads each
external-data file itself (regular files only, capped at
:data:`MAX_EXTERNAL_BYTES`, checked after opening to be the very file the
location resolves to inside the folder) and returns the main graph's
external initializers as arrays, which the session hands to onnxruntime
(``SessionOptions.add_external_initializers``) together with the model's
bytes. External data anywhere else (a node attribute, a subgraph, a
function, a sparse tensor) is refused: onnxruntime would read it by name.
TensorProto fields read for that: dims (1), data_type (2), name (8).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np

from ..files.safe_open import UnsafeFileError, open_regular, read_capped

__all__ = ["MAX_EXTERNAL_BYTES", "ExternalData", "external_data_locations", "load_external_data"]

PathLike = Union[str, "os.PathLike[str]"]

_TENSOR, _GRAPH, _NODE, _ATTRIBUTE, _FUNCTION, _SPARSE, _ENTRY = range(7)
# message kind -> {field number: kind of the sub-message}
_CHILDREN = {
    "model": {7: _GRAPH, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _FUNCTION: {7: _NODE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _TENSOR: {13: _ENTRY},
}
_MAX_DEPTH = 64

#: Largest external-data file read (8 GiB).
MAX_EXTERNAL_BYTES = 8 << 30

#: ONNX TensorProto.data_type -> NumPy dtype, for the element types external data may hold here.
_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2", 11: "<f8",
           12: "<u4", 13: "<u8"}


class _Malformed(ValueError):
    pass


def _varint(buf: "memoryview", pos: int, end: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _all_fields(buf: "memoryview", start: int, end: int) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of each field in buf[start:end].

    The value is the integer of a varint field, ``(start, end)`` of a
    length-delimited one, and None for fixed-size fields.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, wire, None
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    if pos != end:
        raise _Malformed("a field runs past the end of its message")


def _fields(buf: "memoryview", start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in buf[start:end]."""
    for number, wire, value in _all_fields(buf, start, end):
        if wire == 2:
            s, e = value  # type: ignore[misc]
            yield number, s, e


def _walk(buf: "memoryview", kind: object, start: int, end: int, depth: int, out: List[str]) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed(f"messages nested deeper than {_MAX_DEPTH} levels")
    if kind == _ENTRY:
        entry = {number: bytes(buf[s:e]) for number, s, e in _fields(buf, start, end)}
        if entry.get(1) == b"location":
            out.append(entry.get(2, b"").decode("utf-8", "surrogateescape"))
        return
    children = _CHILDREN[kind]
    for number, s, e in _fields(buf, start, end):
        child = children.get(number)
        if child is not None:
            _walk(buf, child, s, e, depth + 1, out)


def external_data_locations(data: "bytes | memoryview") -> List[str]:
    """Every external-data ``location`` named in a serialised ONNX model.

    Raises
    ------
    ValueError
        The bytes are not a well-formed protobuf message.
    """
    out: List[str] = []
    with memoryview(data) as buf:
        _walk(buf, "model", 0, len(buf), 0, out)
    return out


def _location_problem(location: str, folder: Path) -> "str | None":
    if not location:
        return "an empty location"
    if "\x00" in location:
        return "a location with a NUL byte"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        return f"an absolute path {location!r}"
    if ".." in location.replace("\\", "/").split("/"):
        return f"a path with '..' ({location!r})"
    target = Path(os.path.realpath(folder / location))
    real_folder = Path(os.path.realpath(folder))
    if real_folder not in target.parents:
        return f"{location!r}, which leads out of the model's folder (through a link)"
    if not target.is_file():
        return f"{location!r}, which is not a regular file in the model's folder"
    return None


@dataclass
class ExternalData:
    """The main graph's external initializers, read by us: ``names[i]`` holds ``arrays[i]``.

    ``digest`` is the SHA-256 over each tensor's name, dtype, shape and bytes
    (empty string when there is no external data).
    """

    names: List[str] = field(default_factory=list)
    arrays: List[np.ndarray] = field(default_factory=list)
    digest: str = ""


def _text(buf: "memoryview", span: object) -> str:
    s, e = span  # type: ignore[misc]
    return bytes(buf[s:e]).decode("utf-8", "surrogateescape")


def _packed(buf: "memoryview", span: object) -> List[int]:
    s, e = span  # type: ignore[misc]
    out = []
    while s < e:
        value, s = _varint(buf, s, e)
        out.append(value)
    return out


def _tensor(buf: "memoryview", start: int, end: int) -> Tuple[str, List[int], int, Dict[str, str]]:
    """(name, dims, data_type, external_data entries) of a TensorProto."""
    name, dims, dtype, entries = "", [], 0, {}
    for number, wire, value in _all_fields(buf, start, end):
        if number == 1:
            dims += [value] if wire == 0 else _packed(buf, value)  # type: ignore[list-item]
        elif number == 2 and wire == 0:
            dtype = value  # type: ignore[assignment]
        elif number == 8 and wire == 2:
            name = _text(buf, value)
        elif number == 13 and wire == 2:
            s, e = value  # type: ignore[misc]
            entry = {n: _text(buf, v) for n, w, v in _all_fields(buf, s, e) if w == 2}
            entries[entry.get(1, "")] = entry.get(2, "")
    return name, dims, dtype, entries


def _main_external_tensors(buf: "memoryview") -> List[Tuple[str, List[int], int, Dict[str, str]]]:
    """The main graph's initializers (ModelProto.graph.initializer) that name external data."""
    out = []
    for number, gs, ge in _fields(buf, 0, len(buf)):
        if number != 7:
            continue
        for inner, ts, te in _fields(buf, gs, ge):
            if inner == 5:
                tensor = _tensor(buf, ts, te)
                if "location" in tensor[3]:
                    out.append(tensor)
    return out


def _refuse_location(location: str, folder: Path, where: str) -> None:
    problem = _location_problem(location, folder)
    if problem is not None:
        raise ValueError(
            f"{where} refers to external data at {problem}; external data must be a file inside the model's folder"
        )


def _read_inside(folder: Path, location: str, where: str) -> bytes:
    """The bytes of ``folder/location``, if the file opened is the one it resolves to inside ``folder``.

    The location is checked, the file opened (regular files only, capped),
    then checked again with the descriptor open (it still resolves inside the
    folder, to the same device and inode as the opened file), so a file or
    link swapped in between is refused rather than read.
    """
    _refuse_location(location, folder, where)
    try:
        fh = open_regular(folder / location, MAX_EXTERNAL_BYTES)
    except UnsafeFileError as exc:
        raise ValueError(f"{where}: external data {location!r} cannot be used: {exc.reason}") from None
    except OSError as exc:
        raise ValueError(f"{where}: external data {location!r} cannot be read ({exc.strerror})") from None
    with fh:
        _refuse_location(location, folder, where)
        opened = os.fstat(fh.fileno())
        now = os.stat(os.path.realpath(folder / location))
        if (opened.st_dev, opened.st_ino) != (now.st_dev, now.st_ino):
            raise ValueError(f"{where}: external data {location!r} was replaced while it was opened; refused")
        try:
            return read_capped(fh, folder / location, MAX_EXTERNAL_BYTES)
        except UnsafeFileError as exc:
            raise ValueError(f"{where}: external data {location!r} cannot be used: {exc.reason}") from None


def _tensor_array(tensor: Tuple[str, List[int], int, Dict[str, str]], blob: bytes, where: str) -> np.ndarray:
    """The array an external initializer describes, sharing ``blob`` (its file's bytes)."""
    name, dims, dtype_code, entries = tensor
    what = f"{where}: external tensor {name!r}"
    if dtype_code not in _DTYPES:
        raise ValueError(f"{what} has ONNX element type {dtype_code}, which external data may not hold here")
    if any(d >= 2**63 for d in dims):
        raise ValueError(f"{what} has a negative dimension {dims}")
    dtype = np.dtype(_DTYPES[dtype_code])
    nbytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
    try:
        offset = int(entries.get("offset", "0") or "0")
        length = int(entries.get("length", str(nbytes)) or nbytes)
    except ValueError:
        raise ValueError(f"{what} has an offset or length that is not an integer") from None
    if length != nbytes or offset < 0 or offset + nbytes > len(blob):
        raise ValueError(
            f"{what} needs {nbytes} bytes at offset {offset} (length {length}) of {entries['location']!r}, "
            f"a file of {len(blob)} bytes; refused"
        )
    return np.frombuffer(blob, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(dims)


def load_external_data(data: bytes, path: PathLike, where: str) -> ExternalData:
    """Check every external-data location of the model ``data`` (read from ``path``) and read the data.

    Returns the main graph's external initializers (an empty
    :class:`ExternalData` for a self-contained model).

    Raises
    ------
    ValueError
        A location is absolute, has ``..``, leads out of the folder through a
        link or is not a regular file; external data sits outside the main
        graph's initializers; a tensor does not fit its file; or the bytes are
        not a protobuf message.
    """
    folder = Path(path).parent
    with memoryview(data) as buf:
        try:
            locations = external_data_locations(buf)
            tensors = _main_external_tensors(buf)
        except _Malformed as exc:
            raise ValueError(f"{where} could not be loaded as an ONNX model (not a valid protobuf file: {exc})") from None
    for location in locations:
        _refuse_location(location, folder, where)
    if len(tensors) != len(locations):
        raise ValueError(
            f"{where} keeps external data outside the main graph's initializers (in a node attribute, subgraph, "
            "function or sparse tensor), which is not supported; save the model with those tensors inside it"
        )
    result, files, digest = ExternalData(), {}, hashlib.sha256()
    for tensor in tensors:
        location = tensor[3]["location"]
        if location not in files:
            files[location] = _read_inside(folder, location, where)
        array = _tensor_array(tensor, files[location], where)
        result.names.append(tensor[0])
        result.arrays.append(array)
        digest.update(f"{tensor[0]}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8", "surrogateescape"))
        digest.update(memoryview(array.reshape(-1)).cast("B"))
    result.digest = digest.hexdigest() if tensors else ""
    return result

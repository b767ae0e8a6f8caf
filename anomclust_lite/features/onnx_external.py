"""Checking an ONNX model's external-data locations before onnxruntime sees the model.

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
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import BinaryIO, Iterator, List, Tuple, Union

__all__ = ["check_external_data", "external_data_locations"]

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


def _fields(buf: "memoryview", start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field in buf[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed("a field runs past the end of its message")
            yield number, pos, pos + length
            pos += length
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    if pos != end:
        raise _Malformed("a field runs past the end of its message")


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


def check_external_data(fh: BinaryIO, path: PathLike, where: str) -> int:
    """Refuse a model whose external data could be read from outside its folder.

    ``fh`` is the model file ``path``, opened for reading (mapped, not read
    into memory). Returns the number of external-data references (all checked).

    Raises
    ------
    ValueError
        A location is absolute, has ``..``, leads out of the folder through a
        link or is not a regular file; or the file is not a protobuf message.
    """
    path = Path(path)
    folder = path.parent
    if os.fstat(fh.fileno()).st_size == 0:
        return 0
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        try:
            locations = external_data_locations(mapped)
        except _Malformed as exc:
            raise ValueError(f"{where} could not be loaded as an ONNX model (not a valid protobuf file: {exc})") from None
    for location in locations:
        problem = _location_problem(location, folder)
        if problem is not None:
            raise ValueError(
                f"{where} refers to external data at {problem}; external data must be a file inside the "
                "model's folder"
            )
    return len(locations)

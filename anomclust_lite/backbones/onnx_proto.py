"""A minimal ONNX protobuf encoder: model files without the ``onnx`` package.

An ``.onnx`` file is one serialised ``onnx.ModelProto`` (protocol buffers,
proto2 syntax). This module writes the handful of messages a feed-forward
feature extractor needs — ``ModelProto``, ``GraphProto``, ``NodeProto``,
``AttributeProto``, ``TensorProto``, ``ValueInfoProto`` (with ``TypeProto``
and ``TensorShapeProto``), ``OperatorSetIdProto`` and
``StringStringEntryProto`` — with the field numbers of the public
``onnx.proto`` specification. Every function returns the encoded message as
``bytes``; a message embedded in another is written as a length-delimited
field, so the functions compose.

Encoding rules used (protocol buffers' wire format):

- a field is a key ``(field_number << 3) | wire_type`` (varint) then the value;
- wire type 0 (varint): integers, 7 bits per byte, least significant group
  first, high bit set on every byte but the last; a negative ``int64`` is
  written as its 64-bit two's complement (10 bytes);
- wire type 2 (length-delimited): strings (UTF-8), bytes and sub-messages,
  prefixed by their length as a varint;
- wire type 5 (32-bit): ``float``, little-endian IEEE 754.

Fields are written in field-number order and repeated scalars unpacked, as
the reference protobuf runtime does for these proto2 messages; tensor data go
in ``raw_data`` (little-endian). The output is what ``onnx.helper`` /
``numpy_helper`` produce for the same content (the tests check this).

Examples
--------
>>> encode_varint(300).hex()
'ac02'
>>> w = np.ones((1, 1, 1, 1), np.float32)
>>> graph = graph_proto(
...     "g",
...     nodes=[node_proto("Conv", ["x", "w"], ["y"], name="c", attributes={"kernel_shape": [1, 1]})],
...     inputs=[value_info_proto("x", FLOAT, ["N", 1, "H", "W"])],
...     outputs=[value_info_proto("y", FLOAT, ["N", 1, "H", "W"])],
...     initializers=[tensor_proto("w", w)],
... )
>>> data = model_proto(graph, opset=17, ir_version=8)
>>> data[:2].hex()  # field 1 (ir_version), varint 8
'0808'
"""

from __future__ import annotations

import struct
from typing import Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "FLOAT",
    "UINT8",
    "INT8",
    "INT32",
    "INT64",
    "BOOL",
    "FLOAT16",
    "DOUBLE",
    "AttributeValue",
    "encode_varint",
    "tensor_proto",
    "value_info_proto",
    "attribute_proto",
    "node_proto",
    "graph_proto",
    "model_proto",
]

# TensorProto.DataType
FLOAT = 1
UINT8 = 2
INT8 = 3
INT32 = 6
INT64 = 7
BOOL = 9
FLOAT16 = 10
DOUBLE = 11

_NUMPY_TYPES = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UINT8,
    np.dtype(np.int8): INT8,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.bool_): BOOL,
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float64): DOUBLE,
}

# AttributeProto.AttributeType
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 4, 6, 7

# wire types
_VARINT, _LEN, _FIXED32 = 0, 2, 5

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

#: An attribute value: int, float, str, a list of ints or floats, or a tensor.
AttributeValue = Union[int, float, str, Sequence[int], Sequence[float], np.ndarray]
DimSpec = Union[int, str, None]


# ---------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Protocol-buffers varint of a signed 64-bit integer (two's complement when negative).

    Examples
    --------
    >>> encode_varint(1).hex(), encode_varint(127).hex(), encode_varint(128).hex()
    ('01', '7f', '8001')
    >>> len(encode_varint(-1))
    10
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"a varint must be an integer; got {value!r}")
    value = int(value)
    if not _INT64_MIN <= value <= (1 << 64) - 1:
        raise ValueError(f"{value} does not fit in 64 bits")
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def _int(field: int, value: int) -> bytes:
    value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} does not fit in int64")
    return _key(field, _VARINT) + encode_varint(value)


def _len(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + encode_varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"expected a string; got {text!r}")
    return _len(field, text.encode("utf-8"))


def _float(field: int, value: float) -> bytes:
    return _key(field, _FIXED32) + struct.pack("<f", value)


def _many(field: int, messages: Iterable[bytes]) -> bytes:
    return b"".join(_len(field, m) for m in messages)


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string; got {name!r}")
    return name


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def tensor_proto(name: str, array: np.ndarray) -> bytes:
    """``TensorProto``: dims (1), data_type (2), name (8), raw_data (9, little-endian).

    Parameters
    ----------
    name : str
        Tensor name (an initializer's name is how nodes refer to it); left
        out when empty (an attribute's tensor).
    array : numpy.ndarray
        float32/float16/float64, int8/uint8/int32/int64 or bool; copied in
        C order.

    Examples
    --------
    >>> tensor_proto("b", np.zeros(2, np.float32)).hex()
    '080210014201624a080000000000000000'
    """
    name = _check_name(name, "tensor name")
    arr = np.asarray(array)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dtype not in _NUMPY_TYPES:
        raise TypeError(f"tensor {name!r}: dtype {arr.dtype} has no ONNX type here")
    raw = np.asarray(arr, dtype=dtype.newbyteorder("<"), order="C").tobytes()
    dims = b"".join(_int(1, d) for d in arr.shape)
    return dims + _int(2, _NUMPY_TYPES[dtype]) + (_str(8, name) if name else b"") + _len(9, raw)


def _dimension(dim: DimSpec) -> bytes:
    """``TensorShapeProto.Dimension``: dim_value (1) or dim_param (2); None: unknown."""
    if dim is None:
        return b""
    if isinstance(dim, str):
        return _str(2, dim)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
        raise ValueError(f"a dimension must be a size >= 0, a symbolic name or None; got {dim!r}")
    return _int(1, dim)


def value_info_proto(name: str, elem_type: int, shape: "Optional[Sequence[DimSpec]]") -> bytes:
    """``ValueInfoProto`` of a tensor: name (1), type (2) = ``TypeProto.tensor_type`` (1).

    Parameters
    ----------
    name : str
        Graph input or output name.
    elem_type : int
        ``TensorProto.DataType`` (e.g. :data:`FLOAT`).
    shape : sequence of int, str or None, or None
        Per-axis size, symbolic name (dynamic axis) or None (unknown);
        None for an unknown rank.

    Examples
    --------
    >>> value_info_proto("x", FLOAT, [1]).hex()
    '0a0178120a0a08080112040a020801'
    """
    name = _check_name(name, "value name")
    tensor = _int(1, elem_type)
    if shape is not None:
        tensor += _len(2, _many(1, (_dimension(d) for d in shape)))
    return _str(1, name) + _len(2, _len(1, tensor))


def _attribute_payload(name: str, value: AttributeValue) -> bytes:
    """The value field(s) and the type discriminator (20) of an attribute."""
    if isinstance(value, bool):
        raise TypeError(f"attribute {name!r}: pass 0 or 1, not a bool")
    if isinstance(value, (int, np.integer)):
        return _int(3, value) + _int(20, _ATTR_INT)
    if isinstance(value, (float, np.floating)):
        return _float(2, float(value)) + _int(20, _ATTR_FLOAT)
    if isinstance(value, str):
        return _str(4, value) + _int(20, _ATTR_STRING)
    if isinstance(value, np.ndarray):
        return _len(5, tensor_proto("", value)) + _int(20, _ATTR_TENSOR)
    items = list(value)
    if items and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return b"".join(_int(8, v) for v in items) + _int(20, _ATTR_INTS)
    if items and all(isinstance(v, (float, np.floating)) for v in items):
        return b"".join(_float(7, float(v)) for v in items) + _int(20, _ATTR_FLOATS)
    raise TypeError(f"attribute {name!r}: need an int, float, str, tensor or a non-empty list of ints or floats; got {value!r}")


def attribute_proto(name: str, value: AttributeValue) -> bytes:
    """``AttributeProto``: name (1), the value (f 2 / i 3 / s 4 / t 5 / floats 7 / ints 8), type (20).

    Examples
    --------
    >>> attribute_proto("axis", 1).hex()
    '0a04617869731801a00102'
    """
    return _str(1, _check_name(name, "attribute name")) + _attribute_payload(name, value)


def node_proto(
    op_type: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    name: str = "",
    attributes: "Optional[Mapping[str, AttributeValue]]" = None,
    domain: str = "",
) -> bytes:
    """``NodeProto``: input (1), output (2), name (3), op_type (4), attribute (5), domain (7).

    Attributes are written sorted by name (as ``onnx.helper.make_node`` does);
    an empty ``name`` or ``domain`` is left out. An empty input name (an
    omitted optional input) is kept.

    Examples
    --------
    >>> node_proto("Relu", ["x"], ["y"]).hex()
    '0a0178120179220452656c75'
    """
    if not outputs:
        raise ValueError(f"node {name!r} ({op_type}) needs at least one output")
    body = b"".join(_str(1, _check_name(i, "node input")) for i in inputs)
    body += b"".join(_str(2, _check_name(o, "node output")) for o in outputs)
    if name:
        body += _str(3, name)
    body += _str(4, _check_name(op_type, "op_type"))
    for key in sorted(attributes or {}):
        body += _len(5, attribute_proto(key, (attributes or {})[key]))
    if domain:
        body += _str(7, domain)
    return body


def graph_proto(
    name: str,
    *,
    nodes: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    initializers: Sequence[bytes] = (),
    doc_string: str = "",
) -> bytes:
    """``GraphProto``: node (1), name (2), initializer (5), doc_string (10), input (11), output (12).

    ``nodes``, ``inputs``, ``outputs`` and ``initializers`` are encoded
    messages from :func:`node_proto`, :func:`value_info_proto` and
    :func:`tensor_proto`; nodes must be in topological order.
    """
    body = _many(1, nodes) + _str(2, _check_name(name, "graph name")) + _many(5, initializers)
    if doc_string:
        body += _str(10, doc_string)
    return body + _many(11, inputs) + _many(12, outputs)


def model_proto(
    graph: bytes,
    *,
    opset: int,
    ir_version: int,
    producer_name: str = "",
    producer_version: str = "",
    doc_string: str = "",
    metadata: "Optional[Mapping[str, str]]" = None,
) -> bytes:
    """``ModelProto``: the bytes of an ``.onnx`` file.

    Fields: ir_version (1), producer_name (2), producer_version (3),
    doc_string (6), graph (7), opset_import (8) = one ``OperatorSetIdProto``
    (domain (1) "", version (2) ``opset``), metadata_props (14) =
    ``StringStringEntryProto`` (key (1), value (2)) in ``metadata``'s order.
    Empty strings are left out.
    """
    body = _int(1, ir_version)
    if producer_name:
        body += _str(2, producer_name)
    if producer_version:
        body += _str(3, producer_version)
    if doc_string:
        body += _str(6, doc_string)
    body += _len(7, graph) + _len(8, _str(1, "") + _int(2, opset))
    entries: List[bytes] = [_str(1, k) + _str(2, v) for k, v in (metadata or {}).items()]
    return body + _many(14, entries)

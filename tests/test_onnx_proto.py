"""The protobuf encoder (anomclust_lite.backbones.onnx_proto) and the graph builder.

The encoder is checked three ways: varints against a small decoder written
here, every message byte for byte against ``onnx.helper`` / ``numpy_helper``
(test extra), and whole models through ``onnx.checker`` and onnxruntime.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite.backbones import onnx_proto as pb
from anomclust_lite.backbones import reference as ref
from anomclust_lite.backbones.graph import GraphBuilder, batchnorm_affine, fold_batchnorm


def decode_varint(data: bytes, pos: int = 0) -> Tuple[int, int]:
    """(value as unsigned 64-bit, next position)."""
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))
def test_varint_round_trip(value: int) -> None:
    data = pb.encode_varint(value)
    decoded, end = decode_varint(data)
    assert end == len(data)
    assert decoded == value % (1 << 64)
    assert all(b & 0x80 for b in data[:-1]) and not data[-1] & 0x80
    assert len(data) == max(1, -(-(value % (1 << 64)).bit_length() // 7))


@pytest.mark.parametrize("value, hex_", [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"),
                                         (-1, "ffffffffffffffffff01")])
def test_varint_known_values(value: int, hex_: str) -> None:
    assert pb.encode_varint(value).hex() == hex_


@pytest.mark.parametrize("bad", [1 << 64, -(1 << 63) - 1])
def test_varint_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="64 bits"):
        pb.encode_varint(bad)


@pytest.mark.parametrize("bad", [1.0, True, "1"])
def test_varint_needs_an_integer(bad: object) -> None:
    with pytest.raises(TypeError):
        pb.encode_varint(bad)  # type: ignore[arg-type]


def test_bad_values_are_refused() -> None:
    with pytest.raises(TypeError, match="dtype"):
        pb.tensor_proto("t", np.zeros(2, np.complex64))
    with pytest.raises(TypeError, match="bool"):
        pb.attribute_proto("a", True)
    with pytest.raises(TypeError, match="non-empty list"):
        pb.attribute_proto("a", [])
    with pytest.raises(ValueError, match="dimension"):
        pb.value_info_proto("x", pb.FLOAT, [-1])
    with pytest.raises(ValueError, match="at least one output"):
        pb.node_proto("Relu", ["x"], [])


# --------------------------------------------------------------------------- byte-exact vs onnx.helper

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array(3.5, dtype=np.float32),
        np.zeros((0, 4), np.float32),
        np.arange(5, dtype=np.float16),
        np.arange(5, dtype=np.float64) - 2,
        np.array([-3, 0, 7], dtype=np.int64),
        np.array([-3, 0, 7], dtype=np.int32),
        np.array([1, 255], dtype=np.uint8),
        np.array([-128, 5], dtype=np.int8),
        np.array([True, False]),
        np.arange(4, dtype=">f4"),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    ],
)
def test_tensor_bytes_match_numpy_helper(array: np.ndarray) -> None:
    expected = numpy_helper.from_array(np.asarray(array, dtype=array.dtype.newbyteorder("<")), "t")
    assert pb.tensor_proto("t", array) == expected.SerializeToString()
    back = numpy_helper.to_array(TensorProto.FromString(pb.tensor_proto("t", array)))
    np.testing.assert_array_equal(back, array)


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_float_tensors_round_trip(values: list) -> None:
    arr = np.array(values, dtype=np.float32)
    back = numpy_helper.to_array(TensorProto.FromString(pb.tensor_proto("v", arr)))
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("shape", [["N", 3, "H", "W"], [1, 0], [None, 2], [], None])
def test_value_info_bytes_match_helper(shape: list) -> None:
    expected = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    assert pb.value_info_proto("x", pb.FLOAT, shape) == expected.SerializeToString()


@pytest.mark.parametrize(
    "value", [3, -2, 1 << 40, 0.25, -1e-5, "NOTSET", [1, 2, 3], [-1, 0], [0.5, 2.0], np.ones((2, 2), np.float32)]
)
def test_attribute_bytes_match_helper(value: object) -> None:
    as_helper = numpy_helper.from_array(value, "") if isinstance(value, np.ndarray) else value
    assert pb.attribute_proto("a", value) == helper.make_attribute("a", as_helper).SerializeToString()


def test_node_bytes_match_helper() -> None:
    attrs = {"strides": [2, 2], "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 1, "auto_pad": "NOTSET"}
    expected = helper.make_node("Conv", ["x", "w", ""], ["y"], name="conv", **attrs)
    assert pb.node_proto("Conv", ["x", "w", ""], ["y"], name="conv", attributes=attrs) == expected.SerializeToString()
    custom = helper.make_node("Foo", ["x"], ["y", "z"], domain="com.example")
    assert pb.node_proto("Foo", ["x"], ["y", "z"], domain="com.example") == custom.SerializeToString()


def _helper_model(w: np.ndarray) -> "onnx.ModelProto":
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="c", kernel_shape=[1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="y")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=[numpy_helper.from_array(w, "w")],
        doc_string="a doc",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="p",
                              producer_version="1.0", doc_string="model doc")
    model.ir_version = 8
    helper.set_model_props(model, {"k1": "v1", "k2": "ü"})
    return model


def test_model_bytes_match_helper() -> None:
    w = np.random.default_rng(0).standard_normal((3, 2, 1, 1)).astype(np.float32)
    graph = pb.graph_proto(
        "g",
        nodes=[pb.node_proto("Conv", ["x", "w"], ["c"], name="c", attributes={"kernel_shape": [1, 1]}),
               pb.node_proto("Relu", ["c"], ["y"], name="y")],
        inputs=[pb.value_info_proto("x", pb.FLOAT, ["N", 2, "H", "W"])],
        outputs=[pb.value_info_proto("y", pb.FLOAT, ["N", 3, "H", "W"])],
        initializers=[pb.tensor_proto("w", w)],
        doc_string="a doc",
    )
    data = pb.model_proto(graph, opset=17, ir_version=8, producer_name="p", producer_version="1.0",
                          doc_string="model doc", metadata={"k1": "v1", "k2": "ü"})
    expected = _helper_model(w)
    assert data == expected.SerializeToString()
    onnx.checker.check_model(onnx.ModelProto.FromString(data), full_check=True)


# --------------------------------------------------------------------------- GraphBuilder numerics


def _tiny_model() -> Tuple[bytes, dict]:
    rng = np.random.default_rng(1)
    p = {
        "w1": rng.standard_normal((4, 3, 3, 3)),
        "bn": (rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.2, 4), rng.uniform(0.5, 2, 4)),
        "aff": (rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.2, 4), rng.uniform(0.5, 2, 4)),
        "w2": rng.standard_normal((4, 4, 1, 1)),
    }
    g = GraphBuilder()
    x = g.relu(g.conv("image", "c1", *fold_batchnorm(p["w1"], *p["bn"]), stride=2, pad=1), "r1")
    x = g.max_pool(x, "mp", kernel=3, stride=2, pad=1)
    y = g.affine(x, "aff", *batchnorm_affine(*p["aff"]))
    y = g.conv(y, "c2", p["w2"], None, stride=1, pad=0)
    out = g.avg_pool(g.add(x, y, "add"), "out", kernel=3, stride=1, pad=1)
    data = g.to_feature_model(graph_name="tiny", input_name="image", output=out, channels=4, stride=2,
                              backbone_id="tiny", metadata={"extra": "x"})
    return data, p


def _tiny_numpy(p: dict, x: np.ndarray) -> np.ndarray:
    h = ref.relu(ref.batchnorm(ref.conv2d(x, p["w1"], stride=2, pad=1), *p["bn"]))
    h = ref.pool2d(h, 3, stride=2, pad=1, mode="max")
    y = ref.conv2d(ref.batchnorm(h, *p["aff"]), p["w2"], stride=1, pad=0)
    return ref.pool2d(h + y, 3, stride=1, pad=1, mode="avg")


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 13, 7)])
def test_graph_builder_model_runs_and_matches_numpy(shape: Tuple[int, ...]) -> None:
    ort = pytest.importorskip("onnxruntime")
    data, p = _tiny_model()
    onnx.checker.check_model(onnx.ModelProto.FromString(data), full_check=True)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["anomclust_lite.pooled"] == "1" and meta["anomclust_lite.stride"] == "2" and meta["extra"] == "x"
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    got = session.run(["out"], {"image": x})[0]
    want = _tiny_numpy(p, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_graph_builder_refuses_reused_names() -> None:
    g = GraphBuilder()
    g.relu("image", "r")
    with pytest.raises(ValueError, match="used twice"):
        g.relu("r", "r")
    with pytest.raises(ValueError, match="not a node"):
        g.to_feature_model(graph_name="g", input_name="image", output="nope", channels=1, stride=1,
                           backbone_id="g")

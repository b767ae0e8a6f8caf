"""Tiny ONNX models for the extractor tests, built with the ``onnx`` helper API.

Every model takes ``x`` float32 ``(batch, 3, H, W)`` and applies one
convolution with an 8x8 kernel and stride 8 (``channels`` filters, fixed
random weights), so a 32x32 input gives a 4x4 feature map in a few
microseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

onnx = __import__("pytest").importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 13


def conv_weights(channels: int = 4, seed: int = 0) -> np.ndarray:
    """The conv weights, shape (channels, 3, 8, 8)."""
    return np.random.default_rng(seed).standard_normal((channels, 3, 8, 8)).astype(np.float32) / 8.0


def make_model(
    path: Path,
    *,
    batch: "Union[int, str]" = "batch",
    size: "Union[int, str]" = "size",
    channels: int = 4,
    seed: int = 0,
    extra: Sequence[str] = (),
    metadata: "Optional[Dict[str, str]]" = None,
) -> Path:
    """Write a conv model to ``path``.

    ``batch``/``size``: fixed int or a symbolic name. ``extra`` adds outputs:
    ``"stride16"`` (second 4-D output ``feat16``), ``"flat"`` (2-D output
    ``flat``), ``"nan"`` (``feat`` is NaN for images with any input value
    > 2.5, i.e. white pixels), ``"zero"`` (``feat * 0``).
    """
    w = conv_weights(channels, seed)
    inits = [numpy_helper.from_array(w, "w")]
    nodes = []
    conv_out = "conv" if ("nan" in extra or "zero" in extra) else "feat"
    nodes.append(helper.make_node("Conv", ["x", "w"], [conv_out], kernel_shape=[8, 8], strides=[8, 8]))
    out_size = size // 8 if isinstance(size, int) else "h"
    outputs = []
    if "nan" in extra:
        # feat = conv * (NaN if any input value of the image > 2.5 else 1): NaN only for bright images.
        inits.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nanv"))
        inits.append(numpy_helper.from_array(np.array(2.5, np.float32), "thr"))
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
        nodes += [
            helper.make_node("Greater", ["x", "thr"], ["bright"]),
            helper.make_node("Cast", ["bright"], ["brightf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["brightf"], ["anybright"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Cast", ["anybright"], ["anyb"], to=TensorProto.BOOL),
            helper.make_node("Where", ["anyb", "nanv", "one"], ["factor"]),
            helper.make_node("Mul", ["conv", "factor"], ["feat"]),
        ]
    if "zero" in extra:
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zerov"))
        nodes.append(helper.make_node("Mul", ["conv", "zerov"], ["feat"]))
    outputs.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT, [batch, channels, out_size, out_size]))
    if "stride16" in extra:
        inits.append(numpy_helper.from_array(conv_weights(channels + 2, seed + 1)[:, :, :8, :8], "w2"))
        nodes.append(helper.make_node("Conv", ["x", "w2"], ["feat16"], kernel_shape=[8, 8], strides=[16, 16]))
        s16 = size // 16 if isinstance(size, int) else "h16"
        outputs.append(helper.make_tensor_value_info("feat16", TensorProto.FLOAT, [batch, channels + 2, s16, s16]))
    if "flat" in extra:
        nodes.append(helper.make_node("Flatten", ["x"], ["flat"], axis=1))
        outputs.append(helper.make_tensor_value_info("flat", TensorProto.FLOAT, [batch, "n"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="anomclust-tests")
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def reference_bags(x: np.ndarray, channels: int = 4, seed: int = 0, pool: bool = True) -> np.ndarray:
    """Naive NumPy version of model + pooling + normalisation, for (N, 3, 32, 32) inputs."""
    w = conv_weights(channels, seed).astype(np.float64)
    n, _, size, _ = x.shape
    g = size // 8
    fmap = np.zeros((n, channels, g, g))
    for i in range(g):
        for j in range(g):
            patch = x[:, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8].astype(np.float64)
            fmap[:, :, i, j] = np.einsum("nchw,kchw->nk", patch, w)
    if pool:
        pooled = np.zeros_like(fmap)
        for i in range(g):
            for j in range(g):
                acc = 0.0
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        if 0 <= i + di < g and 0 <= j + dj < g:
                            acc = acc + fmap[:, :, i + di, j + dj]
                pooled[:, :, i, j] = acc / 9.0
        fmap = pooled
    patches = fmap.transpose(0, 2, 3, 1).reshape(n, g * g, channels)
    return patches / np.linalg.norm(patches, axis=-1, keepdims=True)


def make_external_model(
    folder: Path, location: str, payload_at: "Optional[Path]" = None, *, length_delta: int = 0, seed: int = 0
) -> Path:
    """``folder/model.onnx``: the conv model with its weights in external data at ``location``.

    The weights' bytes are written to ``payload_at`` (nothing when None);
    ``length_delta`` makes the declared length wrong by that many bytes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(make_model(folder / "base.onnx", seed=seed)))
    weights = next(t for t in model.graph.initializer if t.name == "w")
    raw = numpy_helper.to_array(weights).tobytes()
    if payload_at is not None:
        payload_at.parent.mkdir(parents=True, exist_ok=True)
        payload_at.write_bytes(raw)
    weights.ClearField("float_data")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw) + length_delta))):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path

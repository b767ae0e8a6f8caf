"""Convolutional feature-extractor graphs as ONNX bytes, built layer by layer.

:class:`GraphBuilder` collects the nodes and float32 initializers of a
feed-forward network (Conv, Relu, Add, per-channel affine, max and average
pooling) and serialises it with :mod:`~anomclust_lite.backbones.onnx_proto`:
no ``onnx`` package is needed. :func:`fold_batchnorm` and
:func:`batchnorm_affine` turn inference-mode BatchNorm statistics into
convolution weights or a per-channel scale and shift (float64 arithmetic).

Every model has one float32 input ``(N, 3, H, W)`` and one float32 output
``(N, C, h, w)`` with N, H and W dynamic, and the metadata the extractor
reads (``anomclust_lite.pooled`` etc.); opset 17, IR version 8.

Examples
--------
>>> g = GraphBuilder()
>>> y = g.relu(g.conv("image", "c", np.ones((2, 3, 1, 1), np.float32), None, stride=1, pad=0), "feat")
>>> data = g.to_feature_model(graph_name="tiny", input_name="image", output=y, channels=2, stride=1,
...                           backbone_id="tiny", metadata={"k": "v"})
>>> data[:2].hex()
'0808'
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import onnx_proto as pb

__all__ = ["OPSET", "IR_VERSION", "BN_EPS", "GraphBuilder", "checked_tensor", "fold_batchnorm", "batchnorm_affine"]

#: ONNX operator set of the built models.
OPSET = 17
#: The IR version that introduced opset 17; old runtimes can read it.
IR_VERSION = 8
#: BatchNorm epsilon of torchvision and MXNet Gluon models.
BN_EPS = 1e-5


def checked_tensor(array: object, where: str, *, variance: bool = False) -> np.ndarray:
    """A weight tensor as float64, after checking it is numeric, finite and (``variance``) non-negative.

    Examples
    --------
    >>> checked_tensor([1, 2], "w").dtype
    dtype('float64')
    """
    arr = np.asarray(array)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{where} must be a numeric array; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} contains NaN or inf values")
    if variance and (arr < 0).any():
        raise ValueError(f"{where} has negative variances; the weights are corrupt")
    return arr


def batchnorm_affine(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS
) -> Tuple[np.ndarray, np.ndarray]:
    """Inference BatchNorm as ``x * scale + shift`` per channel (float64).

    Examples
    --------
    >>> s, t = batchnorm_affine(np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([4.0]), eps=0.0)
    >>> s.tolist(), t.tolist()
    ([1.0], [-2.0])
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return scale, shift


def fold_batchnorm(
    weight: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS
) -> Tuple[np.ndarray, np.ndarray]:
    """Convolution ``weight`` (O, C, k, k) followed by BatchNorm -> one convolution's (weight, bias), float32.

    Examples
    --------
    >>> w, b = fold_batchnorm(np.ones((1, 1, 1, 1)), [2.0], [1.0], [3.0], [4.0], eps=0.0)
    >>> w.ravel().tolist(), b.tolist()
    ([1.0], [-2.0])
    """
    scale, shift = batchnorm_affine(gamma, beta, mean, var, eps)
    w = np.asarray(weight, np.float64) * scale[:, None, None, None]
    return w.astype(np.float32), shift.astype(np.float32)


class GraphBuilder:
    """Collects the nodes and initializers of a feed-forward float32 graph.

    Each method adds one layer, names its node after its output and returns
    that output's name, so layers chain: ``g.relu(g.conv(x, ...), ...)``.
    Names must be unique. Initializers are stored as float32.
    """

    def __init__(self) -> None:
        self._nodes: List[bytes] = []
        self._initializers: List[bytes] = []
        self._names: Dict[str, str] = {}

    def _claim(self, name: str, what: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} name must be a non-empty string; got {name!r}")
        if name in self._names:
            raise ValueError(f"name {name!r} is used twice (a {self._names[name]} and a {what})")
        self._names[name] = what
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """Add a float32 initializer; return its name."""
        self._initializers.append(pb.tensor_proto(self._claim(name, "tensor"), np.asarray(array, np.float32)))
        return name

    def op(
        self, op_type: str, inputs: Sequence[str], output: str, attributes: "Optional[Mapping[str, pb.AttributeValue]]" = None
    ) -> str:
        """Add node ``op_type`` named ``output`` with one output ``output``."""
        self._nodes.append(
            pb.node_proto(op_type, list(inputs), [self._claim(output, "node")], name=output, attributes=attributes)
        )
        return output

    def conv(self, x: str, name: str, weight: np.ndarray, bias: "Optional[np.ndarray]", *, stride: int, pad: int) -> str:
        """Square-kernel convolution (weight ``(O, C, k, k)``, optional bias ``(O,)``)."""
        k = int(np.shape(weight)[-1])
        inputs = [x, self.constant(f"{name}.weight", weight)]
        if bias is not None:
            inputs.append(self.constant(f"{name}.bias", bias))
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4}
        return self.op("Conv", inputs, name, attrs)

    def affine(self, x: str, name: str, scale: np.ndarray, shift: np.ndarray) -> str:
        """Per-channel ``x * scale + shift`` (an inference BatchNorm that no convolution can absorb)."""
        s = self.constant(f"{name}.scale", np.reshape(scale, (-1, 1, 1)))
        t = self.constant(f"{name}.shift", np.reshape(shift, (-1, 1, 1)))
        return self.op("Add", [self.op("Mul", [x, s], f"{name}.mul"), t], name)

    def relu(self, x: str, name: str) -> str:
        return self.op("Relu", [x], name)

    def add(self, a: str, b: str, name: str) -> str:
        return self.op("Add", [a, b], name)

    def max_pool(self, x: str, name: str, *, kernel: int, stride: int, pad: int) -> str:
        attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [pad] * 4}
        return self.op("MaxPool", [x], name, attrs)

    def avg_pool(self, x: str, name: str, *, kernel: int, stride: int, pad: int) -> str:
        """Average pooling with the zero padding counted in the mean (torch's ``AvgPool2d`` default)."""
        attrs = {
            "kernel_shape": [kernel, kernel],
            "strides": [stride, stride],
            "pads": [pad] * 4,
            "count_include_pad": 1,
        }
        return self.op("AveragePool", [x], name, attrs)

    def to_feature_model(
        self,
        *,
        graph_name: str,
        input_name: str,
        output: str,
        channels: int,
        stride: int,
        backbone_id: str,
        metadata: "Optional[Mapping[str, str]]" = None,
        doc_string: str = "",
    ) -> bytes:
        """Serialise a feature extractor whose last node ``output`` is the already pooled feature map.

        The input is ``input_name`` float32 ``[N, 3, H, W]`` (ImageNet-normalised
        RGB); the output float32 ``[N, channels, H_div_<stride>, W_div_<stride>]``.
        Metadata: ``anomclust_lite.backbone`` (``backbone_id``), ``.pooled``
        (``"1"``), ``.stride``, ``.input``, then ``metadata``.
        """
        if self._names.get(output) != "node":
            raise ValueError(f"output {output!r} is not a node of this graph")
        if input_name in self._names:
            raise ValueError(f"input name {input_name!r} is also a node or tensor name")
        from .. import __version__

        meta = {
            "anomclust_lite.backbone": backbone_id,
            "anomclust_lite.pooled": "1",
            "anomclust_lite.stride": str(stride),
            "anomclust_lite.input": "imagenet_normalized_rgb",
            **(metadata or {}),
        }
        graph = pb.graph_proto(
            graph_name,
            nodes=self._nodes,
            inputs=[pb.value_info_proto(input_name, pb.FLOAT, ["N", 3, "H", "W"])],
            outputs=[pb.value_info_proto(output, pb.FLOAT, ["N", channels, f"H_div_{stride}", f"W_div_{stride}"])],
            initializers=self._initializers,
            doc_string=doc_string,
        )
        return pb.model_proto(graph, opset=OPSET, ir_version=IR_VERSION, producer_name="anomclust_lite",
                              producer_version=__version__, metadata=meta)

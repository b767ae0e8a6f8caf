"""The WRN-50-2 layer-2 feature extractor written as an ONNX graph with ``onnx.helper``.

Graph: ``conv1`` (7x7, stride 2, pad 3) + ``bn1`` + ReLU, max-pool (3x3,
stride 2, pad 1), ``layer1`` and ``layer2`` Bottleneck blocks, each conv with
its BatchNorm folded in, residual Add and ReLU; then the 3x3 average pool of
the paper. Needs the ``onnx`` package (imported when a graph is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Mapping

from .architecture import (
    WRN50_INPUT_NAME,
    WRN50_LAYER2_CHANNELS,
    WRN50_LAYER2_STRIDE,
    WRN50_OUTPUT_NAME,
    bottleneck_blocks,
    check_state_dict,
    fold_bn,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["import_onnx", "build_wrn50_layer2_onnx"]

_OPSET = 17
_IR_VERSION = 8  # the IR version that introduced opset 17; readable by old runtimes


def import_onnx() -> Any:
    """The ``onnx`` module, or an ImportError that says how to install it.

    Examples
    --------
    >>> import_onnx().__name__  # doctest: +SKIP
    'onnx'
    """
    try:
        import onnx
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "building the WRN-50 ONNX model needs the 'onnx' package; "
            "install it with: pip install anomclust_lite[export]"
        ) from exc
    return onnx


class _GraphBuilder:
    """Collects the nodes and initializers of the graph, one layer at a time."""

    def __init__(self, weights: Mapping[str, Any]) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.weights = weights
        self.nodes: List["onnx.NodeProto"] = []
        self.inits: List["onnx.TensorProto"] = []

    def node(self, op: str, inputs: List[str], output: str, name: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def conv(self, x: str, conv_name: str, bn_name: str, kernel: int, stride: int, pad: int, relu: bool) -> str:
        """Convolution with its BatchNorm folded in, optionally followed by ReLU."""
        w, b = fold_bn(self.weights, conv_name, bn_name)
        self.inits.append(self.numpy_helper.from_array(w, f"{conv_name}.weight_bnfolded"))
        self.inits.append(self.numpy_helper.from_array(b, f"{conv_name}.bias_bnfolded"))
        out = self.node(
            "Conv",
            [x, f"{conv_name}.weight_bnfolded", f"{conv_name}.bias_bnfolded"],
            f"{conv_name}.out",
            conv_name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
        )
        return self.node("Relu", [out], f"{conv_name}.relu", f"{conv_name}.relu") if relu else out

    def bottleneck(self, x: str, prefix: str, stride: int, down: bool) -> str:
        """One Bottleneck block (torchvision v1.5: the stride sits on the 3x3 conv)."""
        h = self.conv(x, f"{prefix}.conv1", f"{prefix}.bn1", 1, 1, 0, relu=True)
        h = self.conv(h, f"{prefix}.conv2", f"{prefix}.bn2", 3, stride, 1, relu=True)
        h = self.conv(h, f"{prefix}.conv3", f"{prefix}.bn3", 1, 1, 0, relu=False)
        identity = (
            self.conv(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", 1, stride, 0, relu=False) if down else x
        )
        added = self.node("Add", [h, identity], f"{prefix}.add", f"{prefix}.add")
        return self.node("Relu", [added], f"{prefix}.out", f"{prefix}.relu")

    def layers(self) -> None:
        """Stem, ``layer1``, ``layer2`` and the 3x3 average pool, input to output."""
        x = self.conv(WRN50_INPUT_NAME, "conv1", "bn1", 7, 2, 3, relu=True)
        x = self.node("MaxPool", [x], "maxpool.out", "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        for prefix, _in, _width, _out, stride, down in bottleneck_blocks():
            x = self.bottleneck(x, prefix, stride, down)
        self.node(
            "AveragePool",
            [x],
            WRN50_OUTPUT_NAME,
            "avgpool3x3",
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        )


def build_wrn50_layer2_onnx(state_dict: Mapping[str, object]) -> "onnx.ModelProto":
    """Build the WRN-50-2 layer-2 feature extractor as an ONNX model.

    Graph: ``conv1`` (7x7, stride 2, pad 3) + ``bn1`` + ReLU, max-pool
    (3x3, stride 2, pad 1), ``layer1`` and ``layer2`` Bottleneck blocks
    (stride 2 on ``layer2.0``'s 3x3 conv and its downsample, torchvision
    v1.5), each conv with its BatchNorm folded in (eps 1e-5), residual Add
    and ReLU; then ``AveragePool`` 3x3, stride 1, pad 1,
    ``count_include_pad=1`` (torch's ``AvgPool2d(3, 1, 1)``).

    Parameters
    ----------
    state_dict : mapping of str -> array
        torchvision ``wide_resnet50_2`` weights (names of
        :func:`~anomclust_lite.backbones.wrn50.architecture.wrn50_layer2_shapes`).
        Entries beyond ``layer2`` are ignored; ``num_batches_tracked`` may be
        absent.

    Returns
    -------
    onnx.ModelProto
        Opset 17, IR version 8, float32 initializers. Input ``"image"``
        ``[N, 3, H, W]``; output ``"layer2_pooled"``
        ``[N, 512, ceil(H/8), ceil(W/8)]``; metadata
        ``anomclust_lite.backbone = "wide_resnet50_2.layer2"``,
        ``anomclust_lite.pooled = "1"``, ``anomclust_lite.stride = "8"``,
        ``anomclust_lite.input = "imagenet_normalized_rgb"``.

    Raises
    ------
    ValueError
        A needed key is missing, has the wrong shape, or holds NaN/inf.
    ImportError
        ``onnx`` is not installed (``pip install anomclust_lite[export]``).

    Examples
    --------
    >>> from anomclust_lite.backbones.wrn50.random_weights import random_wrn50_state_dict
    >>> model = build_wrn50_layer2_onnx(random_wrn50_state_dict(seed=0))
    >>> model.graph.input[0].name, model.graph.output[0].name
    ('image', 'layer2_pooled')
    """
    onnx = import_onnx()
    builder = _GraphBuilder(check_state_dict(state_dict))
    builder.layers()
    model = _model(onnx, builder)
    onnx.checker.check_model(model)
    return model


def _model(onnx: Any, builder: _GraphBuilder) -> "onnx.ModelProto":
    """Wrap the built nodes in a graph and a model with anomclust_lite's metadata."""
    from onnx import TensorProto, helper

    from ... import __version__

    graph = helper.make_graph(
        builder.nodes,
        "wide_resnet50_2_layer2",
        [helper.make_tensor_value_info(WRN50_INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info(
                WRN50_OUTPUT_NAME, TensorProto.FLOAT, ["N", WRN50_LAYER2_CHANNELS, "H_div_8", "W_div_8"]
            )
        ],
        initializer=builder.inits,
        doc_string="torchvision wide_resnet50_2 up to layer2 (BatchNorm folded) + AvgPool2d(3, 1, 1)",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="anomclust_lite",
        producer_version=__version__,
    )
    model.ir_version = _IR_VERSION
    helper.set_model_props(
        model,
        {
            "anomclust_lite.backbone": "wide_resnet50_2.layer2",
            "anomclust_lite.pooled": "1",
            "anomclust_lite.stride": str(WRN50_LAYER2_STRIDE),
            "anomclust_lite.input": "imagenet_normalized_rgb",
        },
    )
    return model

"""The WRN-50-2 layer-2 feature extractor written as ONNX bytes (no ``onnx`` package needed).

Graph: ``conv1`` (7x7, stride 2, pad 3) + ``bn1`` + ReLU, max-pool (3x3,
stride 2, pad 1), ``layer1`` and ``layer2`` Bottleneck blocks, each conv with
its BatchNorm folded in, residual Add and ReLU; then the 3x3 average pool of
the paper. Written with :class:`~anomclust_lite.backbones.graph.GraphBuilder`.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from ..graph import GraphBuilder, fold_batchnorm
from .architecture import (
    WRN50_INPUT_NAME,
    WRN50_LAYER2_CHANNELS,
    WRN50_LAYER2_STRIDE,
    WRN50_OUTPUT_NAME,
    bottleneck_blocks,
    check_state_dict,
)

__all__ = ["WRN50_BACKBONE_ID", "build_wrn50_layer2_onnx"]

#: Value of the ``anomclust_lite.backbone`` model metadata.
WRN50_BACKBONE_ID = "wide_resnet50_2.layer2"


def _conv_bn(g: GraphBuilder, w: Mapping[str, np.ndarray], x: str, conv: str, bn: str, stride: int, pad: int) -> str:
    """Convolution ``conv`` with BatchNorm ``bn`` folded in (torchvision names)."""
    bn_params = (w[f"{bn}.weight"], w[f"{bn}.bias"], w[f"{bn}.running_mean"], w[f"{bn}.running_var"])
    return g.conv(x, conv, *fold_batchnorm(w[f"{conv}.weight"], *bn_params), stride=stride, pad=pad)


def _bottleneck(g: GraphBuilder, w: Mapping[str, np.ndarray], x: str, prefix: str, stride: int, down: bool) -> str:
    """One Bottleneck block (torchvision v1.5: the stride sits on the 3x3 conv)."""
    h = g.relu(_conv_bn(g, w, x, f"{prefix}.conv1", f"{prefix}.bn1", 1, 0), f"{prefix}.relu1")
    h = g.relu(_conv_bn(g, w, h, f"{prefix}.conv2", f"{prefix}.bn2", stride, 1), f"{prefix}.relu2")
    h = _conv_bn(g, w, h, f"{prefix}.conv3", f"{prefix}.bn3", 1, 0)
    identity = _conv_bn(g, w, x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, 0) if down else x
    return g.relu(g.add(h, identity, f"{prefix}.add"), f"{prefix}.out")


def build_wrn50_layer2_onnx(
    state_dict: Mapping[str, object], *, metadata: "Optional[Mapping[str, str]]" = None
) -> bytes:
    """Build the WRN-50-2 layer-2 feature extractor; return the ``.onnx`` file's bytes.

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
    metadata : mapping of str -> str, optional
        Extra model metadata, after the standard keys.

    Returns
    -------
    bytes
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

    Examples
    --------
    >>> from anomclust_lite.backbones.wrn50.random_weights import random_wrn50_state_dict
    >>> data = build_wrn50_layer2_onnx(random_wrn50_state_dict(seed=0))
    >>> len(data) > 16_000_000
    True
    """
    w = check_state_dict(state_dict)
    g = GraphBuilder()
    x = g.relu(_conv_bn(g, w, WRN50_INPUT_NAME, "conv1", "bn1", 2, 3), "conv1.relu")
    x = g.max_pool(x, "maxpool", kernel=3, stride=2, pad=1)
    for prefix, _in, _width, _out, stride, down in bottleneck_blocks():
        x = _bottleneck(g, w, x, prefix, stride, down)
    out = g.avg_pool(x, WRN50_OUTPUT_NAME, kernel=3, stride=1, pad=1)
    return g.to_feature_model(
        graph_name="wide_resnet50_2_layer2",
        input_name=WRN50_INPUT_NAME,
        output=out,
        channels=WRN50_LAYER2_CHANNELS,
        stride=WRN50_LAYER2_STRIDE,
        backbone_id=WRN50_BACKBONE_ID,
        metadata=metadata,
        doc_string="torchvision wide_resnet50_2 up to layer2 (BatchNorm folded) + AvgPool2d(3, 1, 1)",
    )

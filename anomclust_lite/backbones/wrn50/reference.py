"""An independent NumPy forward pass of the WRN-50-2 layer-2 graph (float64), to test the ONNX build.

BatchNorm is applied *unfolded* after each convolution; the layers are
those of :mod:`anomclust_lite.backbones.reference` (im2col + matmul, sliding
windows). Slow; for tests on small
inputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ...core.validation import check_finite_array
from .. import reference as ref
from .architecture import bottleneck_blocks, check_state_dict

__all__ = ["wrn50_layer2_numpy"]


def wrn50_layer2_numpy(state_dict: Mapping[str, object], images: object) -> np.ndarray:
    """Reference forward pass of the exported graph in NumPy (float64).

    Independent of the ONNX path: BatchNorm is applied *unfolded* after each
    convolution, convolutions are im2col + matmul, pooling uses sliding
    windows. Slow; for tests on small inputs.

    Parameters
    ----------
    state_dict : mapping of str -> array
        Weights as for :func:`~anomclust_lite.backbones.wrn50.onnx_graph.build_wrn50_layer2_onnx`.
    images : array_like, shape (N, 3, H, W)
        Normalised RGB images.

    Returns
    -------
    numpy.ndarray, float64, shape (N, 512, ceil(H/8), ceil(W/8))
        ``layer2`` features after the 3x3 average pool.

    Examples
    --------
    >>> from anomclust_lite.backbones.wrn50.random_weights import random_wrn50_state_dict
    >>> sd = random_wrn50_state_dict(seed=0)
    >>> wrn50_layer2_numpy(sd, np.zeros((2, 3, 17, 9))).shape
    (2, 512, 3, 2)
    """
    weights = check_state_dict(state_dict)
    x = check_finite_array(images, "images", 4)
    if x.shape[1] != 3 or x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"images must have shape (N>=1, 3, H>=1, W>=1); got {x.shape}")

    def conv_bn(h: np.ndarray, conv: str, bn: str, stride: int, pad: int) -> np.ndarray:
        bn_params = [weights[f"{bn}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]
        return ref.batchnorm(ref.conv2d(h, weights[f"{conv}.weight"], stride=stride, pad=pad), *bn_params)

    x = np.maximum(conv_bn(x, "conv1", "bn1", 2, 3), 0.0)
    x = ref.pool2d(x, 3, stride=2, pad=1, mode="max")
    for prefix, _in, _width, _out, stride, down in bottleneck_blocks():
        h = np.maximum(conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", 1, 0), 0.0)
        h = np.maximum(conv_bn(h, f"{prefix}.conv2", f"{prefix}.bn2", stride, 1), 0.0)
        h = conv_bn(h, f"{prefix}.conv3", f"{prefix}.bn3", 1, 0)
        identity = conv_bn(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, 0) if down else x
        x = np.maximum(h + identity, 0.0)
    return ref.pool2d(x, 3, stride=1, pad=1, mode="avg")

"""The architecture of torchvision's ``wide_resnet50_2`` up to ``layer2``.

Parameter names and shapes (torchvision's ``state_dict`` layout), the
Bottleneck blocks in order, and checking a state dict against them. Shared by the ONNX build
(:mod:`.onnx_graph`), the NumPy reference (:mod:`.reference`) and the random
weights (:mod:`.random_weights`).

Examples
--------
>>> shapes = wrn50_layer2_shapes()
>>> shapes["layer2.0.conv2.weight"]
(256, 256, 3, 3)
>>> [b[0] for b in bottleneck_blocks()][:2]
['layer1.0', 'layer1.1']
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, Mapping, Tuple

import numpy as np

from ..graph import checked_tensor

__all__ = [
    "WRN50_INPUT_NAME",
    "WRN50_OUTPUT_NAME",
    "WRN50_LAYER2_CHANNELS",
    "WRN50_LAYER2_STRIDE",
    "BN_EPS",
    "bottleneck_blocks",
    "wrn50_layer2_shapes",
    "check_state_dict",
]

logger = logging.getLogger(__name__)

WRN50_INPUT_NAME = "image"
WRN50_OUTPUT_NAME = "layer2_pooled"
WRN50_LAYER2_CHANNELS = 512
WRN50_LAYER2_STRIDE = 8

#: BatchNorm epsilon of torchvision's ResNets.
BN_EPS = 1e-5
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

#: (layer name, input channels, bottleneck width, output channels, blocks, stride).
#: Wide ResNet-50-2: width = planes * 2, output = planes * 4.
_LAYERS = (
    ("layer1", 64, 128, 256, 3, 1),
    ("layer2", 256, 256, 512, 4, 2),
)


def bottleneck_blocks() -> Iterator[Tuple[str, int, int, int, int, bool]]:
    """Yield (prefix, in_ch, width, out_ch, stride, has_downsample) per Bottleneck, in order.

    Examples
    --------
    >>> next(bottleneck_blocks())
    ('layer1.0', 64, 128, 256, 1, True)
    """
    for name, in_ch, width, out_ch, n_blocks, stride in _LAYERS:
        for i in range(n_blocks):
            first = i == 0
            yield f"{name}.{i}", in_ch if first else out_ch, width, out_ch, stride if first else 1, first


def _bn_shapes(prefix: str, channels: int) -> Dict[str, Tuple[int, ...]]:
    return {f"{prefix}.{s}": (() if s == "num_batches_tracked" else (channels,)) for s in _BN_SUFFIXES}


def wrn50_layer2_shapes() -> Dict[str, Tuple[int, ...]]:
    """torchvision ``wide_resnet50_2`` parameter/buffer names and shapes up to ``layer2``.

    Returns
    -------
    dict of str -> tuple of int
        In torchvision's ``state_dict`` order: ``conv1``, ``bn1``, then
        ``layer1.0`` .. ``layer1.2`` and ``layer2.0`` .. ``layer2.3``, each
        with ``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3`` and, in
        block 0, ``downsample.0`` (1x1 conv) / ``downsample.1`` (BatchNorm).
        BatchNorm entries are ``weight``, ``bias``, ``running_mean``,
        ``running_var`` (``(C,)``) and ``num_batches_tracked`` (``()``).

    Examples
    --------
    >>> s = wrn50_layer2_shapes()
    >>> s["conv1.weight"], s["layer1.0.conv2.weight"], s["layer2.0.downsample.0.weight"]
    ((64, 3, 7, 7), (128, 128, 3, 3), (512, 256, 1, 1))
    """
    shapes: Dict[str, Tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}
    shapes.update(_bn_shapes("bn1", 64))
    for prefix, in_ch, width, out_ch, _stride, down in bottleneck_blocks():
        shapes[f"{prefix}.conv1.weight"] = (width, in_ch, 1, 1)
        shapes.update(_bn_shapes(f"{prefix}.bn1", width))
        shapes[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
        shapes.update(_bn_shapes(f"{prefix}.bn2", width))
        shapes[f"{prefix}.conv3.weight"] = (out_ch, width, 1, 1)
        shapes.update(_bn_shapes(f"{prefix}.bn3", out_ch))
        if down:
            shapes[f"{prefix}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
            shapes.update(_bn_shapes(f"{prefix}.downsample.1", out_ch))
    return shapes


def check_state_dict(state_dict: object, name: str = "state_dict") -> Dict[str, np.ndarray]:
    """Return the layer-2 tensors as float64 arrays (num_batches_tracked dropped).

    Extra keys (``layer3``, ``layer4``, ``fc``) are ignored. A missing
    ``num_batches_tracked`` is accepted: inference never uses it, and
    checkpoints from torch < 0.4.1 lack it.

    Examples
    --------
    >>> check_state_dict({})
    Traceback (most recent call last):
    ...
    ValueError: state_dict is missing 'conv1.weight' (expected shape (64, 3, 7, 7)); is this a torchvision wide_resnet50_2 checkpoint?
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{name} must be a mapping of parameter name -> array; got {type(state_dict).__name__}")
    out: Dict[str, np.ndarray] = {}
    for key, shape in wrn50_layer2_shapes().items():
        optional = key.endswith(".num_batches_tracked")
        if key not in state_dict:
            if optional:
                continue
            raise ValueError(
                f"{name} is missing {key!r} (expected shape {shape}); "
                "is this a torchvision wide_resnet50_2 checkpoint?"
            )
        arr = np.asarray(state_dict[key])
        if arr.shape != shape:
            raise ValueError(f"{name}[{key!r}] has shape {arr.shape} but wide_resnet50_2 needs {shape}")
        if not optional:
            out[key] = checked_tensor(arr, f"{name}[{key!r}]", variance=key.endswith(".running_var"))
    ignored = len(state_dict) - sum(1 for k in wrn50_layer2_shapes() if k in state_dict)
    if ignored:
        logger.debug("ignoring %d state_dict entries beyond layer2 (layer3, layer4, fc)", ignored)
    return out

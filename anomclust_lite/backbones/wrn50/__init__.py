"""WideResNet-50-2 up to layer 2 as an ONNX model, built without torch.

The paper's feature extractor is torchvision's ImageNet ``wide_resnet50_2``
cut after ``layer2`` (stride 8, 512 channels) followed by a 3x3 average
pool. This package turns torchvision's checkpoint into that ONNX model:

1. :mod:`.download`: :func:`download_checkpoint` fetches
   ``wide_resnet50_2-95faca4d.pth`` (263 MB) and :func:`verify_checkpoint`
   checks its SHA-256 prefix;
2. :func:`~anomclust_lite.backbones.torch_checkpoint.load_state_dict` reads the
   tensors with a data-only reader;
3. :mod:`.onnx_graph`: :func:`build_wrn50_layer2_onnx` writes the graph with
   the package's own ONNX writer (no ``onnx`` package), BatchNorm folded into the convolutions (the layer
   layout and parameter shapes are in :mod:`.architecture`);
4. :mod:`.export`: :func:`export_wrn50_onnx` does 1-3 and saves the model
   atomically; :func:`build_wrn50_backbone` also keeps it in the user cache as
   a named backbone (:mod:`anomclust_lite.backbones.store`), ``wrn50`` only
   from the verified checkpoint.

The model's input ``"image"`` is float32 ``(N, 3, H, W)`` RGB normalised
with the ImageNet mean/std; its output ``"layer2_pooled"`` is float32
``(N, 512, ceil(H/8), ceil(W/8))``, already average-pooled (model metadata
``anomclust_lite.pooled = "1"``). N, H and W are dynamic.

:func:`wrn50_layer2_numpy` (:mod:`.reference`) is an independent NumPy
forward pass (float64, BatchNorm *not* folded) used to test the ONNX graph,
and :func:`random_wrn50_state_dict` (:mod:`.random_weights`) gives randomly
initialised weights of the same architecture for tests and benchmarks.

Examples
--------
>>> import numpy as np
>>> sd = random_wrn50_state_dict(seed=0)
>>> x = np.zeros((1, 3, 32, 32), dtype=np.float32)
>>> wrn50_layer2_numpy(sd, x).shape
(1, 512, 4, 4)
"""

from __future__ import annotations

from .architecture import (
    WRN50_INPUT_NAME,
    WRN50_LAYER2_CHANNELS,
    WRN50_LAYER2_STRIDE,
    WRN50_OUTPUT_NAME,
    wrn50_layer2_shapes,
)
from .download import (
    WRN50_CHECKPOINT_FILENAME,
    WRN50_SHA256_PREFIX,
    WRN50_URL,
    ChecksumError,
    DownloadError,
    download_checkpoint,
    verify_checkpoint,
)
from .export import WRN50_ONNX_FILENAME, Wrn50Build, build_wrn50_backbone, export_wrn50_onnx
from .onnx_graph import build_wrn50_layer2_onnx
from .random_weights import random_wrn50_state_dict
from .reference import wrn50_layer2_numpy

__all__ = [
    "WRN50_URL",
    "WRN50_SHA256_PREFIX",
    "WRN50_CHECKPOINT_FILENAME",
    "WRN50_ONNX_FILENAME",
    "WRN50_INPUT_NAME",
    "WRN50_OUTPUT_NAME",
    "WRN50_LAYER2_CHANNELS",
    "WRN50_LAYER2_STRIDE",
    "ChecksumError",
    "DownloadError",
    "verify_checkpoint",
    "download_checkpoint",
    "wrn50_layer2_shapes",
    "random_wrn50_state_dict",
    "build_wrn50_layer2_onnx",
    "export_wrn50_onnx",
    "Wrn50Build",
    "build_wrn50_backbone",
    "wrn50_layer2_numpy",
]

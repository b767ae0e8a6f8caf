"""ResNet-50 v2 up to stage 2 (the "layer 2" features) as an ONNX model, built without ``onnx``.

The network is MXNet Gluon's ``resnet50_v2`` as published in the ONNX Model
Zoo (``resnet50-v2-7``, Apache-2.0): a pre-activation ResNet. Its tensors
are named ``resnetv24_<layer>_<param>`` (``<param>`` is ``weight`` for a
convolution, ``gamma``/``beta``/``running_mean``/``running_var`` for a
BatchNorm, epsilon 1e-5):

- stem: ``batchnorm0`` on the input, ``conv0`` 7x7 stride 2, ``batchnorm1``,
  ReLU, 3x3 max-pool stride 2;
- ``stage1`` (3 bottlenecks, 64 -> 256 channels) and ``stage2`` (4, 256 ->
  512, stride 2): block ``b`` is BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3
  conv (stride 2 in stage 2's first block) -> BN -> ReLU -> 1x1 conv, plus a
  shortcut: a strided 1x1 ``conv3`` of the first BN-ReLU's output in block 0,
  the block input otherwise. Block ``b`` uses ``batchnorm{3b..3b+2}`` and
  ``conv{3b+1..3b+3}`` (block 0: ``conv0..conv2``, shortcut ``conv3``);
- ``layer2`` = ReLU(``stage3_batchnorm0``(stage-2 output)), stride 8, 512
  channels — the post-activation feature map, same shape as WideResNet-50-2's
  ``layer2``.

:func:`build_resnet50v2_layer2_onnx` writes that graph plus the 3x3 average
pool (stride 1, padding 1, as in the WRN-50 model), BatchNorm folded into the
convolution before it wherever one exists; the other BatchNorms (on the
input, and the pre-activations on each block input) become a per-channel
affine. :func:`resnet50v2_layer2_numpy` is an independent NumPy forward pass
for the tests. Input: RGB in [0, 1] normalised with the ImageNet mean/std,
float32 ``(N, 3, H, W)``, N/H/W dynamic.

Examples
--------
>>> shapes = resnet50v2_layer2_shapes()
>>> shapes["resnetv24_stage2_conv1_weight"], len(shapes)
((128, 128, 3, 3), 120)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, Mapping, NamedTuple, Tuple, Union

import numpy as np

from . import reference as ref
from .graph import GraphBuilder, batchnorm_affine, checked_tensor, fold_batchnorm

__all__ = [
    "R50V2_PREFIX",
    "R50V2_INPUT_NAME",
    "R50V2_OUTPUT_NAME",
    "R50V2_BACKBONE_ID",
    "resnet50v2_layer2_shapes",
    "check_resnet50v2_weights",
    "load_resnet50v2_npy_dir",
    "build_resnet50v2_layer2_onnx",
    "resnet50v2_layer2_numpy",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Name prefix of every tensor in the ONNX Model Zoo model.
R50V2_PREFIX = "resnetv24_"
R50V2_INPUT_NAME = "image"
R50V2_OUTPUT_NAME = "layer2_pooled"
#: Value of the ``anomclust_lite.backbone`` model metadata.
R50V2_BACKBONE_ID = "resnet50_v2.layer2"
_CHANNELS = 512
_STRIDE = 8
_BN_PARAMS = ("gamma", "beta", "running_mean", "running_var")

#: (stage, input channels, bottleneck width, output channels, blocks, stride)
_STAGES = (("stage1", 64, 64, 256, 3, 1), ("stage2", 256, 128, 512, 4, 2))


class _Block(NamedTuple):
    stage: str
    index: int
    in_ch: int
    width: int
    out_ch: int
    stride: int

    def bn(self, j: int) -> str:
        return f"{self.stage}_batchnorm{3 * self.index + j}"

    def conv(self, j: int) -> str:
        return f"{self.stage}_conv{j if self.index == 0 else 3 * self.index + 1 + j}"

    @property
    def shortcut(self) -> "str | None":
        return f"{self.stage}_conv3" if self.index == 0 else None


def _blocks() -> Iterator[_Block]:
    for stage, in_ch, width, out_ch, n_blocks, stride in _STAGES:
        for i in range(n_blocks):
            yield _Block(stage, i, in_ch if i == 0 else out_ch, width, out_ch, stride if i == 0 else 1)


def _bn_shapes(layer: str, channels: int) -> Dict[str, Tuple[int, ...]]:
    return {f"{R50V2_PREFIX}{layer}_{p}": (channels,) for p in _BN_PARAMS}


def resnet50v2_layer2_shapes() -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the tensors the layer-2 model needs (stem, stages 1-2, ``stage3_batchnorm0``).

    Examples
    --------
    >>> s = resnet50v2_layer2_shapes()
    >>> s["resnetv24_conv0_weight"], s["resnetv24_stage2_conv3_weight"]
    ((64, 3, 7, 7), (512, 256, 1, 1))
    """
    p = R50V2_PREFIX
    shapes = _bn_shapes("batchnorm0", 3)
    shapes[f"{p}conv0_weight"] = (64, 3, 7, 7)
    shapes.update(_bn_shapes("batchnorm1", 64))
    for b in _blocks():
        shapes.update(_bn_shapes(b.bn(0), b.in_ch))
        shapes[f"{p}{b.conv(0)}_weight"] = (b.width, b.in_ch, 1, 1)
        shapes.update(_bn_shapes(b.bn(1), b.width))
        shapes[f"{p}{b.conv(1)}_weight"] = (b.width, b.width, 3, 3)
        shapes.update(_bn_shapes(b.bn(2), b.width))
        shapes[f"{p}{b.conv(2)}_weight"] = (b.out_ch, b.width, 1, 1)
        if b.shortcut:
            shapes[f"{p}{b.shortcut}_weight"] = (b.out_ch, b.in_ch, 1, 1)
    shapes.update(_bn_shapes("stage3_batchnorm0", _CHANNELS))
    return shapes


def check_resnet50v2_weights(weights: object, name: str = "weights") -> Dict[str, np.ndarray]:
    """Validate the tensors the model needs; return them as float64 arrays (extra keys ignored).

    Raises
    ------
    ValueError
        Not a mapping, a tensor missing, of the wrong shape or type, NaN/inf,
        or a negative BatchNorm variance.
    """
    if not isinstance(weights, Mapping):
        raise ValueError(f"{name} must be a mapping of tensor name -> array; got {type(weights).__name__}")
    out: Dict[str, np.ndarray] = {}
    for key, shape in resnet50v2_layer2_shapes().items():
        if key not in weights:
            raise ValueError(f"{name} is missing {key!r} (shape {shape}); are these ResNet-50 v2 (resnet50-v2-7) weights?")
        arr = np.asarray(weights[key])
        if arr.shape != shape:
            raise ValueError(f"{name}[{key!r}] has shape {arr.shape}; ResNet-50 v2 needs {shape}")
        out[key] = checked_tensor(arr, f"{name}[{key!r}]", variance=key.endswith("_running_var"))
    return out


def load_resnet50v2_npy_dir(folder: PathLike) -> Dict[str, np.ndarray]:
    """Read the needed ``<name>.npy`` files from ``folder`` (no pickle); validated, float64.

    Raises
    ------
    FileNotFoundError
        ``folder`` or one of the files does not exist.
    ValueError
        A file is not a plain ``.npy`` array or fails :func:`check_resnet50v2_weights`.
    """
    root = Path(os.fspath(folder))
    if not root.is_dir():
        raise FileNotFoundError(f"weights folder {str(root)!r} does not exist")
    weights: Dict[str, np.ndarray] = {}
    for key in resnet50v2_layer2_shapes():
        path = root / f"{key}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is missing; the folder must hold resnet50-v2-7's per-tensor .npy files")
        try:
            weights[key] = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r} is not a plain .npy array ({exc})") from exc
    return check_resnet50v2_weights(weights, str(root))


def _bn(w: Mapping[str, np.ndarray], layer: str) -> Tuple[np.ndarray, ...]:
    return tuple(w[f"{R50V2_PREFIX}{layer}_{p}"] for p in _BN_PARAMS)


def _conv_w(w: Mapping[str, np.ndarray], layer: str) -> np.ndarray:
    return w[f"{R50V2_PREFIX}{layer}_weight"]


def _onnx_block(g: GraphBuilder, w: Mapping[str, np.ndarray], b: _Block, x: str) -> str:
    """One pre-activation bottleneck; BN 1 and 2 folded into the convolutions before them."""
    tag = f"{b.stage}.{b.index}"
    pre = g.relu(g.affine(x, f"{tag}.bn0", *batchnorm_affine(*_bn(w, b.bn(0)))), f"{tag}.relu0")
    shortcut = g.conv(pre, f"{tag}.shortcut", _conv_w(w, b.shortcut), None, stride=b.stride, pad=0) if b.shortcut else x
    h = g.conv(pre, f"{tag}.conv0", *fold_batchnorm(_conv_w(w, b.conv(0)), *_bn(w, b.bn(1))), stride=1, pad=0)
    h = g.relu(h, f"{tag}.relu1")
    h = g.conv(h, f"{tag}.conv1", *fold_batchnorm(_conv_w(w, b.conv(1)), *_bn(w, b.bn(2))), stride=b.stride, pad=1)
    h = g.relu(h, f"{tag}.relu2")
    h = g.conv(h, f"{tag}.conv2", _conv_w(w, b.conv(2)), None, stride=1, pad=0)
    return g.add(h, shortcut, f"{tag}.add")


def build_resnet50v2_layer2_onnx(weights: Mapping[str, object], *, metadata: "Mapping[str, str] | None" = None) -> bytes:
    """The layer-2 feature model (3x3 average pool included) as ``.onnx`` bytes.

    Parameters
    ----------
    weights : mapping of str -> array
        ``resnetv24_*`` tensors (see :func:`resnet50v2_layer2_shapes`), any
        floating dtype; extra entries are ignored.
    metadata : mapping of str -> str, optional
        Extra model metadata, added after the standard keys
        ``anomclust_lite.backbone``, ``.pooled`` (``"1"``), ``.stride``,
        ``.input``.

    Returns
    -------
    bytes
        Opset 17 model: input ``"image"`` float32 ``[N, 3, H, W]``, output
        ``"layer2_pooled"`` float32 ``[N, 512, ceil(H/8), ceil(W/8)]``.
    """
    w = check_resnet50v2_weights(weights)
    g = GraphBuilder()
    x = g.affine(R50V2_INPUT_NAME, "stem.bn0", *batchnorm_affine(*_bn(w, "batchnorm0")))
    x = g.relu(g.conv(x, "stem.conv0", *fold_batchnorm(_conv_w(w, "conv0"), *_bn(w, "batchnorm1")), stride=2, pad=3), "stem.relu")
    x = g.max_pool(x, "stem.maxpool", kernel=3, stride=2, pad=1)
    for block in _blocks():
        x = _onnx_block(g, w, block, x)
    x = g.relu(g.affine(x, "layer2.bn", *batchnorm_affine(*_bn(w, "stage3_batchnorm0"))), "layer2")
    out = g.avg_pool(x, R50V2_OUTPUT_NAME, kernel=3, stride=1, pad=1)
    return g.to_feature_model(
        graph_name="resnet50_v2_layer2",
        input_name=R50V2_INPUT_NAME,
        output=out,
        channels=_CHANNELS,
        stride=_STRIDE,
        backbone_id=R50V2_BACKBONE_ID,
        metadata=metadata,
        doc_string="ResNet-50 v2 (ONNX Model Zoo resnet50-v2-7, Apache-2.0) stem + stages 1-2, "
        "ReLU(stage3_batchnorm0) + AveragePool 3x3/1/1",
    )


def _numpy_block(w: Mapping[str, np.ndarray], b: _Block, x: np.ndarray) -> np.ndarray:
    pre = ref.relu(ref.batchnorm(x, *_bn(w, b.bn(0))))
    shortcut = ref.conv2d(pre, _conv_w(w, b.shortcut), stride=b.stride, pad=0) if b.shortcut else x
    h = ref.relu(ref.batchnorm(ref.conv2d(pre, _conv_w(w, b.conv(0)), stride=1, pad=0), *_bn(w, b.bn(1))))
    h = ref.relu(ref.batchnorm(ref.conv2d(h, _conv_w(w, b.conv(1)), stride=b.stride, pad=1), *_bn(w, b.bn(2))))
    return ref.conv2d(h, _conv_w(w, b.conv(2)), stride=1, pad=0) + shortcut


def resnet50v2_layer2_numpy(weights: Mapping[str, object], images: object, *, pooled: bool = True) -> np.ndarray:
    """Reference forward pass in NumPy (float64, BatchNorm unfolded); slow, for tests.

    Returns ``(N, 512, ceil(H/8), ceil(W/8))``: ``layer2`` after the 3x3
    average pool, or before it with ``pooled=False``.

    Examples
    --------
    >>> w = {k: np.full(s, 0.5) for k, s in resnet50v2_layer2_shapes().items()}
    >>> resnet50v2_layer2_numpy(w, np.zeros((1, 3, 17, 9))).shape
    (1, 512, 3, 2)
    """
    w = check_resnet50v2_weights(weights)
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape) < 1:
        raise ValueError(f"images must have shape (N>=1, 3, H>=1, W>=1); got {x.shape}")
    x = ref.batchnorm(x, *_bn(w, "batchnorm0"))
    x = ref.relu(ref.batchnorm(ref.conv2d(x, _conv_w(w, "conv0"), stride=2, pad=3), *_bn(w, "batchnorm1")))
    x = ref.pool2d(x, 3, stride=2, pad=1, mode="max")
    for block in _blocks():
        x = _numpy_block(w, block, x)
    x = ref.relu(ref.batchnorm(x, *_bn(w, "stage3_batchnorm0")))
    return ref.pool2d(x, 3, stride=1, pad=1, mode="avg") if pooled else x

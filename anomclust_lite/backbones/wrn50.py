"""WideResNet-50-2 up to layer 2 as an ONNX model, built without torch.

The paper's feature extractor is torchvision's ImageNet ``wide_resnet50_2``
cut after ``layer2`` (stride 8, 512 channels) followed by a 3x3 average
pool. This module turns torchvision's checkpoint into that ONNX model:

1. :func:`download_checkpoint` fetches ``wide_resnet50_2-95faca4d.pth``
   (263 MB) and :func:`verify_checkpoint` checks its SHA-256 prefix;
2. :func:`~anomclust_lite.backbones.torch_checkpoint.load_state_dict` reads the
   tensors with a data-only reader;
3. :func:`build_wrn50_layer2_onnx` writes the graph with ``onnx.helper``,
   BatchNorm folded into the convolutions;
4. :func:`export_wrn50_onnx` does 1-3 and saves the model atomically.

The model's input ``"image"`` is float32 ``(N, 3, H, W)`` RGB normalised
with the ImageNet mean/std; its output ``"layer2_pooled"`` is float32
``(N, 512, ceil(H/8), ceil(W/8))``, already average-pooled (model metadata
``anomclust_lite.pooled = "1"``). N, H and W are dynamic.

:func:`wrn50_layer2_numpy` is an independent NumPy forward pass (float64,
BatchNorm *not* folded) used to test the ONNX graph, and
:func:`random_wrn50_state_dict` gives randomly initialised weights of the
same architecture for tests and benchmarks.

Examples
--------
>>> shapes = wrn50_layer2_shapes()
>>> shapes["layer2.0.conv2.weight"]
(256, 256, 3, 3)
>>> sd = random_wrn50_state_dict(seed=0)
>>> x = np.zeros((1, 3, 32, 32), dtype=np.float32)
>>> wrn50_layer2_numpy(sd, x).shape
(1, 512, 4, 4)
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..core.validation import check_finite_array, check_int, check_positive_float
from .torch_checkpoint import load_state_dict

if TYPE_CHECKING:  # pragma: no cover
    import onnx

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
    "user_cache_dir",
    "verify_checkpoint",
    "download_checkpoint",
    "wrn50_layer2_shapes",
    "random_wrn50_state_dict",
    "build_wrn50_layer2_onnx",
    "export_wrn50_onnx",
    "cache_wrn50_onnx",
    "wrn50_layer2_numpy",
]

logger = logging.getLogger(__name__)

#: torchvision's ImageNet weights for ``wide_resnet50_2`` (IMAGENET1K_V1).
WRN50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
#: Leading hex digits of the checkpoint's SHA-256 (torchvision's convention).
WRN50_SHA256_PREFIX = "95faca4d"
#: File name of the checkpoint in the cache directory.
WRN50_CHECKPOINT_FILENAME = "wide_resnet50_2-95faca4d.pth"
#: File name of the exported model in the cache directory.
WRN50_ONNX_FILENAME = "wrn50_layer2.onnx"
WRN50_INPUT_NAME = "image"
WRN50_OUTPUT_NAME = "layer2_pooled"
WRN50_LAYER2_CHANNELS = 512
WRN50_LAYER2_STRIDE = 8

_BN_EPS = 1e-5
_OPSET = 17
_IR_VERSION = 8  # the IR version that introduced opset 17; readable by old runtimes
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_ALLOWED_URL_SCHEMES = ("https", "http", "file")

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, Optional[int]], None]


class ChecksumError(ValueError):
    """A file's SHA-256 does not match the published checkpoint."""


class DownloadError(OSError):
    """The checkpoint could not be downloaded (network or server error)."""


# ---------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------

#: (layer name, input channels, bottleneck width, output channels, blocks, stride).
#: Wide ResNet-50-2: width = planes * 2, output = planes * 4.
_LAYERS = (
    ("layer1", 64, 128, 256, 3, 1),
    ("layer2", 256, 256, 512, 4, 2),
)


def _blocks() -> Iterator[Tuple[str, int, int, int, int, bool]]:
    """Yield (prefix, in_ch, width, out_ch, stride, has_downsample) per Bottleneck."""
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
    for prefix, in_ch, width, out_ch, _stride, down in _blocks():
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


def _check_state_dict(state_dict: object, name: str = "state_dict") -> Dict[str, np.ndarray]:
    """Return the layer-2 tensors as float64 arrays (num_batches_tracked dropped).

    Extra keys (``layer3``, ``layer4``, ``fc``) are ignored. A missing
    ``num_batches_tracked`` is accepted: inference never uses it, and
    checkpoints from torch < 0.4.1 lack it.
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
        if optional:
            continue
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}[{key!r}] must be a numeric array; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}[{key!r}] contains NaN or inf values")
        if key.endswith(".running_var") and (arr < 0).any():
            raise ValueError(f"{name}[{key!r}] has negative variances; the checkpoint is corrupt")
        out[key] = arr
    ignored = len(state_dict) - sum(1 for k in wrn50_layer2_shapes() if k in state_dict)
    if ignored:
        logger.debug("ignoring %d state_dict entries beyond layer2 (layer3, layer4, fc)", ignored)
    return out


def random_wrn50_state_dict(seed: int = 0) -> Dict[str, np.ndarray]:
    """Randomly initialised ``wide_resnet50_2`` weights up to ``layer2``.

    Convolutions use He-normal initialisation; every BatchNorm gets
    non-trivial statistics (``running_mean`` ~ N(0, 0.2²),
    ``running_var`` ~ U(0.5, 2), ``weight`` ~ U(0.5, 1.5), ``bias`` ~
    N(0, 0.1²); the last BatchNorm of each residual branch is scaled down
    so activations stay O(1) through the blocks).

    Parameters
    ----------
    seed : int
        Seed for ``numpy.random.default_rng``; equal seeds give equal weights.

    Returns
    -------
    dict of str -> numpy.ndarray
        Names and shapes of :func:`wrn50_layer2_shapes`; float32 tensors and
        int64 scalar ``num_batches_tracked``.

    Examples
    --------
    >>> sd = random_wrn50_state_dict(seed=1)
    >>> sd["bn1.running_var"].shape, sd["bn1.num_batches_tracked"].dtype
    ((64,), dtype('int64'))
    """
    seed = check_int(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for key, shape in wrn50_layer2_shapes().items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif key.endswith(".num_batches_tracked"):
            out[key] = np.array(rng.integers(1, 1_000_000), dtype=np.int64)
            continue
        elif key.endswith(".running_mean"):
            arr = rng.normal(0.0, 0.2, shape)
        elif key.endswith(".running_var"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif key.endswith(".bias"):
            arr = rng.normal(0.0, 0.1, shape)
        else:  # BatchNorm weight
            arr = rng.uniform(0.5, 1.5, shape)
            if ".bn3." in key:
                arr *= 0.3
        out[key] = arr.astype(np.float32)
    return out


def _fold_bn(weights: Mapping[str, np.ndarray], conv: str, bn: str) -> Tuple[np.ndarray, np.ndarray]:
    """Fold BatchNorm ``bn`` into convolution ``conv``; float64 in, float32 out."""
    scale = weights[f"{bn}.weight"] / np.sqrt(weights[f"{bn}.running_var"] + _BN_EPS)
    w = weights[f"{conv}.weight"] * scale[:, None, None, None]
    b = weights[f"{bn}.bias"] - weights[f"{bn}.running_mean"] * scale
    return w.astype(np.float32), b.astype(np.float32)


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------


def _import_onnx():  # type: ignore[no-untyped-def]
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
        :func:`wrn50_layer2_shapes`). Entries beyond ``layer2`` are ignored;
        ``num_batches_tracked`` may be absent.

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
    >>> model = build_wrn50_layer2_onnx(random_wrn50_state_dict(seed=0))
    >>> model.graph.input[0].name, model.graph.output[0].name
    ('image', 'layer2_pooled')
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    weights = _check_state_dict(state_dict)
    nodes: List["onnx.NodeProto"] = []
    inits: List["onnx.TensorProto"] = []

    def conv(x: str, conv_name: str, bn_name: str, kernel: int, stride: int, pad: int, relu: bool) -> str:
        w, b = _fold_bn(weights, conv_name, bn_name)
        inits.append(numpy_helper.from_array(w, f"{conv_name}.weight_bnfolded"))
        inits.append(numpy_helper.from_array(b, f"{conv_name}.bias_bnfolded"))
        out = f"{conv_name}.out"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{conv_name}.weight_bnfolded", f"{conv_name}.bias_bnfolded"],
                [out],
                name=conv_name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        if not relu:
            return out
        nodes.append(helper.make_node("Relu", [out], [f"{conv_name}.relu"], name=f"{conv_name}.relu"))
        return f"{conv_name}.relu"

    x = conv(WRN50_INPUT_NAME, "conv1", "bn1", 7, 2, 3, relu=True)
    nodes.append(
        helper.make_node("MaxPool", [x], ["maxpool.out"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    )
    x = "maxpool.out"
    for prefix, _in, _width, _out, stride, down in _blocks():
        h = conv(x, f"{prefix}.conv1", f"{prefix}.bn1", 1, 1, 0, relu=True)
        h = conv(h, f"{prefix}.conv2", f"{prefix}.bn2", 3, stride, 1, relu=True)
        h = conv(h, f"{prefix}.conv3", f"{prefix}.bn3", 1, 1, 0, relu=False)
        identity = conv(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", 1, stride, 0, relu=False) if down else x
        nodes.append(helper.make_node("Add", [h, identity], [f"{prefix}.add"], name=f"{prefix}.add"))
        nodes.append(helper.make_node("Relu", [f"{prefix}.add"], [f"{prefix}.out"], name=f"{prefix}.relu"))
        x = f"{prefix}.out"
    nodes.append(
        helper.make_node(
            "AveragePool",
            [x],
            [WRN50_OUTPUT_NAME],
            name="avgpool3x3",
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        )
    )
    graph = helper.make_graph(
        nodes,
        "wide_resnet50_2_layer2",
        [helper.make_tensor_value_info(WRN50_INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info(
                WRN50_OUTPUT_NAME, TensorProto.FLOAT, ["N", WRN50_LAYER2_CHANNELS, "H_div_8", "W_div_8"]
            )
        ],
        initializer=inits,
        doc_string="torchvision wide_resnet50_2 up to layer2 (BatchNorm folded) + AvgPool2d(3, 1, 1)",
    )
    from .. import __version__

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
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------
# Files: cache, checksum, download, export
# ---------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """Per-user cache directory for downloaded checkpoints and exported models.

    ``$ANOMCLUST_CACHE`` if set, else ``$XDG_CACHE_HOME/anomclust_lite`` (when
    ``XDG_CACHE_HOME`` is an absolute path), else ``~/.cache/anomclust_lite``.
    The directory is not created.

    Examples
    --------
    >>> user_cache_dir().name != ""
    True
    """
    env = os.environ.get("ANOMCLUST_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "anomclust_lite"
    return Path.home() / ".cache" / "anomclust_lite"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
        raise ValueError(f"sha256_prefix must be a non-empty hex string; got {prefix!r}")
    return prefix.lower()


def verify_checkpoint(
    path: PathLike, *, allow_unverified: bool = False, sha256_prefix: str = WRN50_SHA256_PREFIX
) -> str:
    """Check that ``path`` is the published checkpoint by its SHA-256.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (read in 1 MiB chunks).
    allow_unverified : bool
        If true, a mismatch only logs a warning (use for your own or
        fine-tuned weights).
    sha256_prefix : str
        Expected leading hex digits of the digest (default: torchvision's
        ``95faca4d``).

    Returns
    -------
    str
        The file's full SHA-256 hex digest.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ChecksumError
        The digest does not start with ``sha256_prefix`` and
        ``allow_unverified`` is false.

    Examples
    --------
    >>> import tempfile, pathlib, hashlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pth"
    >>> _ = p.write_bytes(b"weights")
    >>> verify_checkpoint(p, sha256_prefix=hashlib.sha256(b"weights").hexdigest()[:8])[:8]
    '9a129038'
    """
    prefix = _check_prefix(sha256_prefix)
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist or is not a file")
    digest = _sha256(p)
    if digest.startswith(prefix):
        return digest
    msg = (
        f"checkpoint {str(p)!r} has SHA-256 {digest[:16]}..., expected a digest starting with {prefix!r} "
        f"(torchvision's wide_resnet50_2 weights); the file is corrupt or different"
    )
    if not allow_unverified:
        raise ChecksumError(msg + "; pass allow_unverified=True (--allow-unverified) to use it anyway")
    logger.warning("%s; using it anyway because allow_unverified=True", msg)
    return digest


def _atomic_write(dest: Path, write: Callable[[Callable[[bytes], object]], None]) -> None:
    """Write ``dest`` via a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f.write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def download_checkpoint(
    dest: PathLike,
    *,
    url: str = WRN50_URL,
    sha256_prefix: str = WRN50_SHA256_PREFIX,
    progress: Optional[ProgressCallback] = None,
    timeout: float = 60.0,
) -> Path:
    """Download the checkpoint to ``dest``, verify it, and move it into place.

    The data go to a temporary file beside ``dest`` and replace ``dest``
    only after the whole file has arrived and its SHA-256 matched, so an
    interrupted download never leaves a partial ``dest``. Parent
    directories are created.

    Parameters
    ----------
    dest : str or os.PathLike
        Where to write the checkpoint file.
    url : str
        ``https://``, ``http://`` or ``file://`` URL (default: torchvision's).
    sha256_prefix : str
        Expected leading hex digits of the SHA-256.
    progress : callable, optional
        Called as ``progress(bytes_done, total_bytes_or_None)`` after each chunk.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DownloadError
        Network or server failure (an ``OSError``); the message names the URL.
    ChecksumError
        The downloaded data have the wrong SHA-256 (nothing is written).
    ValueError
        ``url`` has an unsupported scheme.

    Examples
    --------
    >>> import tempfile, pathlib, hashlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "src.pth").write_bytes(b"weights")
    >>> out = download_checkpoint(d / "copy.pth", url=(d / "src.pth").as_uri(),
    ...                           sha256_prefix=hashlib.sha256(b"weights").hexdigest()[:8])
    >>> out.read_bytes()
    b'weights'
    """
    prefix = _check_prefix(sha256_prefix)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in _ALLOWED_URL_SCHEMES:
        raise ValueError(f"url must be an https://, http:// or file:// URL; got {url!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable (bytes_done, total) or None; got {progress!r}")
    timeout = check_positive_float(timeout, "timeout")
    dest_p = Path(os.fspath(dest))
    dest_p.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()

    def fetch(write: Callable[[bytes], object]) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if isinstance(exc, DownloadError):
                raise
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {url}: {reason}. Download the file by hand and pass its path "
                "(--checkpoint / export_wrn50_onnx(checkpoint=...))"
            ) from exc
        if total is not None and done != total:
            raise DownloadError(f"download of {url} stopped after {done} of {total} bytes; try again")
        digest = hasher.hexdigest()
        if not digest.startswith(prefix):
            raise ChecksumError(
                f"downloaded {url} has SHA-256 {digest[:16]}..., expected a digest starting with {prefix!r}; "
                "the download is corrupt or the file changed"
            )

    logger.info("downloading %s to %s", url, dest_p)
    _atomic_write(dest_p, fetch)
    return dest_p


def export_wrn50_onnx(checkpoint: PathLike, out: PathLike, *, allow_unverified: bool = False) -> Path:
    """Checkpoint file -> verified, loaded, built and saved ONNX model.

    Parameters
    ----------
    checkpoint : str or os.PathLike
        torchvision's ``wide_resnet50_2-95faca4d.pth`` (or, with
        ``allow_unverified``, any ``torch.save`` file of the same
        architecture).
    out : str or os.PathLike
        Where to write the ``.onnx`` file; written atomically (temporary
        file + ``os.replace``); parent directories are created.
    allow_unverified : bool
        Accept a checkpoint whose SHA-256 does not match (logs a warning).

    Returns
    -------
    pathlib.Path
        ``out``. The model records the checkpoint's digest in metadata
        ``anomclust_lite.checkpoint_sha256`` and whether it matched in
        ``anomclust_lite.checkpoint_verified`` (``"1"``/``"0"``).

    Raises
    ------
    ChecksumError, UnsafeCheckpointError, ValueError, FileNotFoundError, ImportError
        See :func:`verify_checkpoint`, :func:`~anomclust_lite.backbones.torch_checkpoint.load_state_dict`
        and :func:`build_wrn50_layer2_onnx`.

    Examples
    --------
    >>> export_wrn50_onnx("missing.pth", "out.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint 'missing.pth' does not exist or is not a file
    """
    if not isinstance(allow_unverified, bool):
        raise ValueError(f"allow_unverified must be True or False; got {allow_unverified!r}")
    out_p = Path(os.fspath(out))
    digest = verify_checkpoint(checkpoint, allow_unverified=allow_unverified)
    _import_onnx()
    model = build_wrn50_layer2_onnx(load_state_dict(checkpoint))
    from onnx import helper

    props = {p.key: p.value for p in model.metadata_props}
    props["anomclust_lite.checkpoint_sha256"] = digest
    props["anomclust_lite.checkpoint_verified"] = "1" if digest.startswith(WRN50_SHA256_PREFIX) else "0"
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    payload = model.SerializeToString()
    _atomic_write(out_p, lambda write: write(payload))
    logger.info("wrote %s (%.1f MB)", out_p, len(payload) / 1e6)
    return out_p


def cache_wrn50_onnx(onnx_path: PathLike) -> Path:
    """Copy an exported model to ``user_cache_dir() / "wrn50_layer2.onnx"`` (atomically).

    Parameters
    ----------
    onnx_path : str or os.PathLike
        A model written by :func:`export_wrn50_onnx`.

    Returns
    -------
    pathlib.Path
        The cached copy (``onnx_path`` itself if it already is that file).

    Examples
    --------
    >>> cache_wrn50_onnx("missing.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: onnx_path 'missing.onnx' does not exist or is not a file
    """
    src = Path(os.fspath(onnx_path))
    if not src.is_file():
        raise FileNotFoundError(f"onnx_path {str(src)!r} does not exist or is not a file")
    cache = user_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / WRN50_ONNX_FILENAME
    if dest.exists() and os.path.samefile(src, dest):
        return dest

    def copy(write: Callable[[bytes], object]) -> None:
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                write(chunk)

    _atomic_write(dest, copy)
    logger.info("cached %s as %s", src, dest)
    return dest


# ---------------------------------------------------------------------------
# NumPy reference forward pass (tests)
# ---------------------------------------------------------------------------


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Convolution by im2col + matmul. x (N, C, H, W), w (O, C, k, k) -> (N, O, Ho, Wo)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, : (ho - 1) * stride + 1 : stride, : (wo - 1) * stride + 1 : stride]  # (N, C, Ho, Wo, kh, kw)
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    out = cols @ w.reshape(o, c * kh * kw).T
    return out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def _batchnorm(x: np.ndarray, weights: Mapping[str, np.ndarray], bn: str) -> np.ndarray:
    def per_channel(v: np.ndarray) -> np.ndarray:
        return v[None, :, None, None]

    mean = per_channel(weights[f"{bn}.running_mean"])
    std = per_channel(np.sqrt(weights[f"{bn}.running_var"] + _BN_EPS))
    return (x - mean) / std * per_channel(weights[f"{bn}.weight"]) + per_channel(weights[f"{bn}.bias"])


def _pool(x: np.ndarray, kernel: int, stride: int, pad: int, mode: str) -> np.ndarray:
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.max(axis=(-2, -1)) if mode == "max" else win.mean(axis=(-2, -1))


def wrn50_layer2_numpy(state_dict: Mapping[str, object], images: object) -> np.ndarray:
    """Reference forward pass of the exported graph in NumPy (float64).

    Independent of the ONNX path: BatchNorm is applied *unfolded* after each
    convolution, convolutions are im2col + matmul, pooling uses sliding
    windows. Slow; for tests on small inputs.

    Parameters
    ----------
    state_dict : mapping of str -> array
        Weights as for :func:`build_wrn50_layer2_onnx`.
    images : array_like, shape (N, 3, H, W)
        Normalised RGB images.

    Returns
    -------
    numpy.ndarray, float64, shape (N, 512, ceil(H/8), ceil(W/8))
        ``layer2`` features after the 3x3 average pool.

    Examples
    --------
    >>> sd = random_wrn50_state_dict(seed=0)
    >>> wrn50_layer2_numpy(sd, np.zeros((2, 3, 17, 9))).shape
    (2, 512, 3, 2)
    """
    weights = _check_state_dict(state_dict)
    x = check_finite_array(images, "images", 4)
    if x.shape[1] != 3 or x.shape[0] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"images must have shape (N>=1, 3, H>=1, W>=1); got {x.shape}")

    def conv_bn(h: np.ndarray, conv: str, bn: str, stride: int, pad: int) -> np.ndarray:
        return _batchnorm(_conv2d(h, weights[f"{conv}.weight"], stride, pad), weights, bn)

    x = np.maximum(conv_bn(x, "conv1", "bn1", 2, 3), 0.0)
    x = _pool(x, 3, 2, 1, "max")
    for prefix, _in, _width, _out, stride, down in _blocks():
        h = np.maximum(conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", 1, 0), 0.0)
        h = np.maximum(conv_bn(h, f"{prefix}.conv2", f"{prefix}.bn2", stride, 1), 0.0)
        h = conv_bn(h, f"{prefix}.conv3", f"{prefix}.bn3", 1, 0)
        identity = conv_bn(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, 0) if down else x
        x = np.maximum(h + identity, 0.0)
    return _pool(x, 3, 1, 1, "avg")

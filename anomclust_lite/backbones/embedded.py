"""The default backbone shipped inside the package: ResNet-50 v2 layer 2, float16 weights.

``data/resnet50v2_layer2.npz`` holds the 120 tensors
:func:`~anomclust_lite.backbones.resnet50v2.build_resnet50v2_layer2_onnx`
needs, from the ONNX Model Zoo's ``resnet50-v2-7`` (MXNet Gluon
``resnet50_v2``, ImageNet, Apache-2.0; see the NOTICE file): 42 of the 45
convolution kernels as float16 (the stem's and stage 1's first two 1x1
kernels, which float16 rounding hurts most, as float32), the BatchNorm
vectors as float32, and a ``__source__`` entry (JSON text: where the tensors came from). It is a
plain zip of ``.npy`` files, read with ``allow_pickle=False`` after its
SHA-256 is checked against :data:`EMBEDDED_SHA256`.

At first use :func:`embedded_model_path` builds the ONNX model from it
(about 0.2 s, no ``onnx`` package) and writes it atomically to the user cache
as ``resnet50v2_layer2-<digest>.onnx``; later calls rebuild the bytes and use
the cached file only if it is byte-identical, rewriting it otherwise.

:func:`write_embedded_backbone` writes the package file from the Model Zoo's
tensors (``tools/build_embedded_backbone.py``), through :func:`pack_weights`.

Examples
--------
>>> weights = load_embedded_weights()
>>> weights["resnetv24_conv0_weight"].shape
(64, 3, 7, 7)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np

from ..files.atomic import atomic_write_bytes
from ..files.user_cache import user_cache_dir
from .resnet50v2 import build_resnet50v2_layer2_onnx, check_resnet50v2_weights, load_resnet50v2_npy_dir

__all__ = [
    "EMBEDDED_NAME",
    "EMBEDDED_FILE",
    "EMBEDDED_SHA256",
    "EMBEDDED_SOURCE",
    "EmbeddedBackboneError",
    "pack_weights",
    "write_embedded_backbone",
    "load_embedded_weights",
    "embedded_model_bytes",
    "embedded_model_path",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Name of the embedded backbone (``--backbone`` value).
EMBEDDED_NAME = "resnet50v2"
#: The package file, beside this module.
EMBEDDED_FILE = Path(__file__).resolve().parent / "data" / "resnet50v2_layer2.npz"
#: SHA-256 of :data:`EMBEDDED_FILE` (printed by tools/build_embedded_backbone.py).
EMBEDDED_SHA256 = "db77e5cf77608f324a39fadc6a1ca251c206c4505dac83d921b636f5ee14cae3"
#: Where the weights come from (also in the file's ``__source__`` entry).
EMBEDDED_SOURCE = "ONNX Model Zoo resnet50-v2-7 (MXNet Gluon resnet50_v2, ImageNet), Apache-2.0"

_SOURCE_KEY = "__source__"
#: Kernels kept in float32: in float16 the stem's alone gives 2.8e-3 relative error on real
#: images (the other 44 together 7e-4); with these three in float32 it is 4.3e-4 (+60 kB).
_FLOAT32_KERNELS = frozenset({"resnetv24_conv0_weight", "resnetv24_stage1_conv0_weight", "resnetv24_stage1_conv3_weight"})
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal weights give equal files


class EmbeddedBackboneError(ValueError):
    """The embedded weights file is missing, damaged or not what this version shipped."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
    return buf.getvalue()


def pack_weights(weights: Mapping[str, object], source: Mapping[str, str]) -> bytes:
    """The package file's bytes: validated tensors, most kernels float16, the rest float32, plus ``__source__``.

    The zip entries are sorted and carry a fixed date, so the same weights
    always give the same bytes.

    Parameters
    ----------
    weights : mapping of str -> array
        At least the tensors of
        :func:`~anomclust_lite.backbones.resnet50v2.resnet50v2_layer2_shapes`
        (extra ones are dropped).
    source : mapping of str -> str
        Provenance stored as JSON text (e.g. ``{"model": ..., "licence": ...}``).
    """
    checked = check_resnet50v2_weights(weights)
    entries = {k: v.astype(np.float16 if v.ndim == 4 and k not in _FLOAT32_KERNELS else np.float32) for k, v in checked.items()}
    entries[_SOURCE_KEY] = np.array(json.dumps(dict(source), sort_keys=True))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(entries):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, _npy_bytes(entries[key]))
    return buf.getvalue()


#: Provenance written into the package file's ``__source__`` entry.
_PACKAGE_SOURCE = {
    "model": EMBEDDED_SOURCE,
    "tensors": "stem, stage1, stage2, stage3_batchnorm0 of resnet50-v2-7 (resnetv24_*)",
    "storage": "convolution kernels float16 except conv0, stage1_conv0, stage1_conv3 (float32); BatchNorm vectors float32",
}


def write_embedded_backbone(weights_dir: PathLike, out: PathLike = EMBEDDED_FILE) -> bytes:
    """Write the embedded backbone's package file from the Model Zoo's ``resnetv24_*.npy`` tensors.

    Reads the tensors of ``resnet50-v2-7`` (one ``.npy`` file per tensor, no
    pickle) from ``weights_dir``, keeps the ones the layer-2 model needs,
    packs them with :func:`pack_weights` and writes ``out`` atomically (its
    folder is created). Returns the bytes written; their SHA-256 belongs in
    :data:`EMBEDDED_SHA256`.

    Raises
    ------
    FileNotFoundError
        ``weights_dir`` or one of the needed files does not exist.
    ValueError
        A file is not a plain ``.npy`` array, or a tensor has the wrong shape.

    Examples
    --------
    The package file's own tensors, written out one ``.npy`` per tensor,
    give the package file back byte for byte:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for key, value in load_embedded_weights().items():
    ...         np.save(os.path.join(tmp, key + ".npy"), value)
    ...     data = write_embedded_backbone(tmp, os.path.join(tmp, "out", "resnet50v2_layer2.npz"))
    >>> hashlib.sha256(data).hexdigest() == EMBEDDED_SHA256
    True
    """
    data = pack_weights(load_resnet50v2_npy_dir(weights_dir), _PACKAGE_SOURCE)
    target = Path(os.fspath(out))
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return data


def _read_npz(data: bytes, where: str) -> Dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise EmbeddedBackboneError(f"{where} is not a readable weights file ({exc}); reinstall anomclust_lite") from exc


def load_embedded_weights(path: "Optional[PathLike]" = None) -> Dict[str, np.ndarray]:
    """Read and check the embedded weights (float64 arrays; the ``__source__`` entry is not returned).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Another file in the same format (its checksum is not checked);
        default :data:`EMBEDDED_FILE`, which must match :data:`EMBEDDED_SHA256`.

    Raises
    ------
    EmbeddedBackboneError
        The file is missing, its checksum differs, or its content is not
        valid ResNet-50 v2 weights.
    """
    file = EMBEDDED_FILE if path is None else Path(os.fspath(path))
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise EmbeddedBackboneError(f"the embedded backbone {str(file)!r} cannot be read ({exc}); reinstall anomclust_lite") from exc
    if path is None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != EMBEDDED_SHA256:
            raise EmbeddedBackboneError(
                f"the embedded backbone {str(file)!r} has SHA-256 {digest[:16]}..., expected {EMBEDDED_SHA256[:16]}...; "
                "the installation is damaged: reinstall anomclust_lite"
            )
    arrays = _read_npz(data, repr(str(file)))
    try:
        weights = check_resnet50v2_weights(arrays, str(file))
    except ValueError as exc:
        raise EmbeddedBackboneError(str(exc)) from exc
    return weights


def embedded_model_bytes() -> bytes:
    """The embedded backbone as ``.onnx`` bytes (metadata names its source and weights checksum)."""
    weights = load_embedded_weights()
    meta = {
        "anomclust_lite.source": EMBEDDED_SOURCE,
        "anomclust_lite.weights": f"embedded {EMBEDDED_FILE.name} (float16)",
        "anomclust_lite.weights_sha256": EMBEDDED_SHA256,
    }
    return build_resnet50v2_layer2_onnx(weights, metadata=meta)


def embedded_model_path(cache_dir: "Optional[PathLike]" = None, *, write: bool = True) -> Path:
    """Path of the embedded backbone's ONNX file in the user cache, written there if needed.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Default: :func:`~anomclust_lite.files.user_cache.user_cache_dir`.
        Created if missing.
    write : bool, default True
        False: only say where the file is or will be (listing the backbones
        writes nothing).

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/resnet50v2_layer2-<first 16 hex digits of its SHA-256>.onnx``,
        byte-identical to :func:`embedded_model_bytes`.
    """
    if cache_dir is None:
        cache_dir = user_cache_dir()
    data = embedded_model_bytes()
    target = Path(os.fspath(cache_dir)) / f"resnet50v2_layer2-{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    if not write:
        return target
    try:
        if target.read_bytes() == data:
            return target
        logger.warning("the cached %s differs from the embedded backbone; rewriting it", target)
    except FileNotFoundError:
        logger.info("writing the embedded backbone to %s", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target

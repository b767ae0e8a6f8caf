"""On-disk cache of per-image patch embeddings.

An entry is addressed by a key derived from the sha256 of the image file's
bytes and from the extraction settings (model sha256, output name, resize,
crop, pooling, cache format version), so a changed image, model or setting
simply misses the cache and never returns stale features. Each entry is two
files, both written atomically::

    <directory>/<key[:2]>/<key>.npy    the bag, float32 (M, D), saved without pickle
    <directory>/<key[:2]>/<key>.json   shape, dtype, sha256 of the array bytes, settings

Entries are float32 unless the caller asks for float64 (``dtype=``): the
same format holds derived arrays, e.g. the score matrices that
``tools/reproduce.py`` keys by the sha256 of the bags they come from.

The JSON sidecar is written after the array, so an interrupted write leaves
at worst an array without sidecar, which counts as a miss. On reading, the
sidecar's settings, shape, dtype and checksum are verified; a truncated,
tampered or mismatching entry is logged as a warning, ignored, and
overwritten by the next :meth:`FeatureCache.put`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from ..files.atomic import atomic_save_npy, atomic_write_text
from ..files.safe_open import open_regular, read_regular
from .images import display_path

__all__ = ["CACHE_FORMAT_VERSION", "CACHE_DTYPES", "FeatureCache", "file_sha256"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Version of the cache layout and of the extraction recipe; part of every key.
CACHE_FORMAT_VERSION = 1
#: The array types an entry may hold.
CACHE_DTYPES = ("float32", "float64")

# Entries are read as regular files only (a FIFO or device in the cache is a
# miss, never read), the sidecar up to 1 MiB, the array up to its recorded size
# plus a header.
_META_MAX_BYTES = 1 << 20
_NPY_HEADER_MAX = 1 << 16


def file_sha256(data: bytes) -> str:
    """Hex sha256 of ``data`` (the bytes of an image file).

    Examples
    --------
    >>> file_sha256(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"dtype must be one of {CACHE_DTYPES}; got {dtype!r}")
    return np.dtype(dtype)


def _read_npy(path: Path, meta: object, shape: "Optional[Tuple[int, ...]]", dtype: str = "float32") -> np.ndarray:
    """Read a cached ``.npy`` whose header must announce the recorded shape and ``dtype``.

    The header is checked before any data is read, so a damaged or tampered
    header cannot make the reader allocate a huge array.
    """
    recorded = meta.get("shape") if isinstance(meta, dict) else None
    if not isinstance(recorded, list) or not all(isinstance(v, int) and v >= 0 for v in recorded):
        raise ValueError("the sidecar records no valid shape")
    if shape is not None and tuple(recorded) != tuple(shape):
        raise ValueError(f"recorded shape {tuple(recorded)}, expected {tuple(shape)}")
    expected = math.prod(recorded) * np.dtype(dtype).itemsize
    with open_regular(path, expected + _NPY_HEADER_MAX) as fh:
        if os.fstat(fh.fileno()).st_size < expected:
            raise ValueError(f"the array file is shorter than the recorded shape {tuple(recorded)} needs")
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        file_shape, fortran_order, file_dtype = header
        if tuple(file_shape) != tuple(recorded) or fortran_order or file_dtype != np.dtype(dtype):
            raise ValueError(
                f"the array header ({tuple(file_shape)}, {file_dtype}) does not match the recorded "
                f"({tuple(recorded)}, {dtype})"
            )
        array = np.empty(tuple(recorded), dtype=dtype)
        n_read = fh.readinto(memoryview(array).cast("B"))
        if n_read != array.nbytes or fh.read(1):
            raise ValueError(f"the array data has the wrong length ({n_read} bytes read, {array.nbytes} expected)")
    return array


class FeatureCache:
    """A folder of cached bags, one ``.npy`` (+ ``.json``) per image and settings.

    Parameters
    ----------
    directory : str or os.PathLike
        Cache folder; created (with parents) if missing.

    Raises
    ------
    ValueError
        ``directory`` exists and is not a folder.
    OSError
        The folder cannot be created.

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> settings = {"model_sha256": "ab", "resize": 256}
    >>> key = cache.key(file_sha256(b"image bytes"), settings)
    >>> cache.get(key, settings) is None
    True
    >>> cache.put(key, np.ones((4, 2), np.float32), settings)
    >>> float(cache.get(key, settings, shape=(4, 2)).sum())
    8.0
    """

    def __init__(self, directory: PathLike) -> None:
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise ValueError(f"cache_dir {display_path(path)} exists and is not a folder; pass a folder path")
        path.mkdir(parents=True, exist_ok=True)
        self.directory = path

    def __repr__(self) -> str:
        return f"FeatureCache({display_path(self.directory)!r})"

    @staticmethod
    def content_sha256(*arrays: np.ndarray) -> str:
        """Hex sha256 of the shapes, dtypes and bytes of ``arrays``, in order.

        The content part of :meth:`key` for arrays derived from other arrays
        (scores from bags), as :func:`file_sha256` is for an image's features.

        Examples
        --------
        >>> a = np.zeros((2, 3), np.float32)
        >>> FeatureCache.content_sha256(a) == FeatureCache.content_sha256(a.copy())
        True
        >>> FeatureCache.content_sha256(a) == FeatureCache.content_sha256(a.reshape(3, 2))
        False
        """
        digest = hashlib.sha256()
        for array in arrays:
            arr = np.ascontiguousarray(array)
            digest.update(str((arr.shape, arr.dtype.str)).encode())
            digest.update(arr.tobytes())
        return digest.hexdigest()

    @staticmethod
    def key(image_sha256: str, settings: Mapping[str, Any]) -> str:
        """Cache key (hex sha256) of an image's content hash and the extraction settings."""
        payload = _canonical({"format": CACHE_FORMAT_VERSION, "image_sha256": image_sha256, "settings": dict(settings)})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _paths(self, key: str) -> Tuple[Path, Path]:
        folder = self.directory / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def get(
        self,
        key: str,
        settings: Mapping[str, Any],
        *,
        shape: "Optional[Tuple[int, ...]]" = None,
        dtype: str = "float32",
    ) -> "Optional[np.ndarray]":
        """Return the cached array (of ``dtype``, one of :data:`CACHE_DTYPES`) for ``key``, or None on a miss.

        A missing entry is a silent miss; an entry that fails verification
        (unreadable, truncated, checksum, shape, dtype or settings mismatch)
        is a miss with a logged warning.
        """
        _check_dtype(dtype)
        array_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(read_regular(meta_path, _META_MAX_BYTES).decode("utf-8"))
            array = _read_npy(array_path, meta, shape, dtype)
        except Exception as exc:  # a damaged entry is a miss, whatever the parser raised
            reason = " ".join(str(exc).split()) or type(exc).__name__
            logger.warning("feature cache entry %s is unreadable (%s); recomputing", key, reason)
            return None
        problem = self._verify(array, meta, settings, shape, dtype)
        if problem is not None:
            logger.warning("feature cache entry %s is invalid (%s); recomputing", key, problem)
            return None
        return array

    @staticmethod
    def _verify(
        array: np.ndarray,
        meta: object,
        settings: Mapping[str, Any],
        shape: "Optional[Tuple[int, ...]]",
        dtype: str,
    ) -> "Optional[str]":
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT_VERSION:
            return "unknown sidecar format"
        if meta.get("settings") != json.loads(_canonical(settings)):
            return "settings differ"
        if array.dtype != np.dtype(dtype) or meta.get("dtype") != dtype:
            return f"dtype {meta.get('dtype')}, expected {dtype}"
        if list(array.shape) != meta.get("shape"):
            return f"shape {array.shape} differs from the recorded {meta.get('shape')}"
        if shape is not None and tuple(array.shape) != tuple(shape):
            return f"shape {array.shape}, expected {tuple(shape)}"
        if _array_sha256(array) != meta.get("sha256"):
            return "checksum mismatch"
        return None

    def put(self, key: str, array: np.ndarray, settings: Mapping[str, Any], *, dtype: str = "float32") -> None:
        """Store ``array`` (cast to ``dtype``, one of :data:`CACHE_DTYPES`) under ``key``, atomically."""
        arr = np.ascontiguousarray(array, dtype=_check_dtype(dtype))
        array_path, meta_path = self._paths(key)
        array_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "settings": json.loads(_canonical(settings)),
            "dtype": dtype,
            "shape": list(arr.shape),
            "sha256": _array_sha256(arr),
        }
        atomic_save_npy(array_path, arr)
        atomic_write_text(meta_path, json.dumps(meta, sort_keys=True, indent=1))

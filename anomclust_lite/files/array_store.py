"""A folder of verified arrays: one ``.npy`` and a JSON sidecar per entry, written atomically.

The one on-disk format of every cache of anomclust_lite (features, patch
scores, embeddings, ...). An entry is addressed by a key derived from the
sha256 of its content's source (an image file's bytes, the bags it was
computed from) and from the settings that define it, so a changed input or
setting simply misses and never returns a stale array::

    <directory>/<key[:2]>/<key>.npy    the array (float32 or float64), saved without pickle
    <directory>/<key[:2]>/<key>.json   shape, dtype, sha256 of the array bytes, settings

The JSON sidecar is written after the array, so an interrupted write leaves
at worst an array without sidecar, which counts as a miss. On reading, the
sidecar's settings, shape, dtype and checksum are verified; a truncated,
tampered or mismatching entry is logged as a warning, ignored, and
overwritten by the next :meth:`ArrayStore.put`.

In a store of a :class:`~anomclust_lite.files.cache_folder.CacheFolder`
(``track_use=True``), a hit sets the sidecar's modification time to now:
the least-recently-used order the folder evicts by. A store opened on its
own (``Extractor(cache_dir=DIR)``, a shared read-only feature cache) is only
read on a hit, never touched.

A write that fails (a full disk, a read-only folder, a file size limit)
turns writing off for the stores sharing its :class:`WriteGuard`, with one
logged warning naming the folder and the cause: the run goes on without
caching what is left, and what is already cached is still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import numpy as np

from .atomic import atomic_save_npy, atomic_write_text
from .safe_open import open_regular, read_regular
from .safe_text import display_path

__all__ = ["STORE_FORMAT_VERSION", "STORE_DTYPES", "ArrayStore", "WriteGuard"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Version of the entry layout; part of every key.
STORE_FORMAT_VERSION = 1
#: The array types an entry may hold.
STORE_DTYPES = ("float32", "float64")

# Entries are read as regular files only (a FIFO or device in the cache is a
# miss, never read), the sidecar up to 1 MiB, the array up to its recorded size
# plus a header.
_META_MAX_BYTES = 1 << 20
_NPY_HEADER_MAX = 1 << 16


class WriteGuard:
    """Shared by the stores of one cache folder: the first failed write turns writing off, with one warning.

    Attributes
    ----------
    folder : pathlib.Path
        The folder named in the warning.
    failure : str or None
        Why writing was turned off (None while it is on).
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self.failure: Optional[str] = None

    def write(self, action: Callable[[], None]) -> bool:
        """Run ``action`` unless writing is off; an ``OSError`` turns it off (one warning). True if written."""
        if self.failure is not None:
            return False
        try:
            action()
            return True
        except OSError as exc:
            self.failure = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
            logger.warning("cache folder %s cannot take more files (%s); going on without caching",
                           display_path(self.folder), self.failure)
            return False


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {STORE_DTYPES}; got {dtype!r}")
    return np.dtype(dtype)


def _read_header(fh: Any) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


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
        file_shape, fortran_order, file_dtype = _read_header(fh)
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


class ArrayStore:
    """A folder of cached arrays, one ``.npy`` (+ ``.json``) per key and settings.

    Parameters
    ----------
    directory : str or os.PathLike
        Cache folder; created (with parents) if missing.
    guard : WriteGuard, optional
        Shared with the other stores of a cache folder (default: a guard of
        its own): the first write that fails turns writing off for all.
    label : str, optional
        What the store holds, as its warnings say (default ``"cache"``).
    track_use : bool, default False
        Refresh an entry's time on every hit (for least-recently-used eviction).

    Raises
    ------
    ValueError
        ``directory`` exists and is not a folder.
    OSError
        The folder cannot be created.

    Examples
    --------
    >>> import tempfile
    >>> store = ArrayStore(tempfile.mkdtemp())
    >>> settings = {"model_sha256": "ab", "resize": 256}
    >>> key = store.key(hashlib.sha256(b"image bytes").hexdigest(), settings)
    >>> store.get(key, settings) is None
    True
    >>> store.put(key, np.ones((4, 2), np.float32), settings)
    True
    >>> float(store.get(key, settings, shape=(4, 2)).sum())
    8.0
    """

    #: What the store holds, as warnings name it ("feature cache entry ... is unreadable").
    label = "cache"

    def __init__(self, directory: PathLike, *, guard: Optional[WriteGuard] = None, label: Optional[str] = None,
                 track_use: bool = False) -> None:
        path = Path(directory)
        if path.exists() and not path.is_dir():
            raise ValueError(f"cache_dir {display_path(path)} exists and is not a folder; pass a folder path")
        path.mkdir(parents=True, exist_ok=True)
        self.directory = path
        self.guard = guard if guard is not None else WriteGuard(path)
        if label is not None:
            self.label = label
        self.track_use = track_use

    def __repr__(self) -> str:
        return f"{type(self).__name__}({display_path(self.directory)!r})"

    @staticmethod
    def content_sha256(*arrays: np.ndarray) -> str:
        """Hex sha256 of the shapes, dtypes and bytes of ``arrays``, in order.

        The content part of :meth:`key` for arrays derived from other arrays
        (scores from bags), as an image file's sha256 is for its features.

        Examples
        --------
        >>> a = np.zeros((2, 3), np.float32)
        >>> ArrayStore.content_sha256(a) == ArrayStore.content_sha256(a.copy())
        True
        >>> ArrayStore.content_sha256(a) == ArrayStore.content_sha256(a.reshape(3, 2))
        False
        """
        digest = hashlib.sha256()
        for array in arrays:
            arr = np.ascontiguousarray(array)
            digest.update(str((arr.shape, arr.dtype.str)).encode())
            digest.update(memoryview(arr).cast("B"))
        return digest.hexdigest()

    @staticmethod
    def key(content_sha256: str, settings: Mapping[str, Any]) -> str:
        """Entry key (hex sha256) of a content hash and the settings that define the entry."""
        payload = _canonical({"format": STORE_FORMAT_VERSION, "image_sha256": content_sha256,
                              "settings": dict(settings)})
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
        """Return the cached array (of ``dtype``, one of :data:`STORE_DTYPES`) for ``key``, or None on a miss.

        A missing entry is a silent miss; an entry that fails verification
        (unreadable, truncated, checksum, shape, dtype or settings mismatch)
        is a miss with a logged warning. With ``track_use``, a hit marks the entry as just used.
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
            logger.warning("%s entry %s is unreadable (%s); recomputing", self.label, key, reason)
            return None
        problem = self._verify(array, meta, settings, shape, dtype)
        if problem is not None:
            logger.warning("%s entry %s is invalid (%s); recomputing", self.label, key, problem)
            return None
        self._touch(meta_path)
        return array

    def _touch(self, meta_path: Path) -> None:
        """Mark an entry as just used (its sidecar's time); a read-only cache is left as it is."""
        if self.track_use and self.guard.failure is None:
            try:
                os.utime(meta_path)
            except OSError:
                pass

    @staticmethod
    def _verify(
        array: np.ndarray,
        meta: object,
        settings: Mapping[str, Any],
        shape: "Optional[Tuple[int, ...]]",
        dtype: str,
    ) -> "Optional[str]":
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT_VERSION:
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

    def put(self, key: str, array: np.ndarray, settings: Mapping[str, Any], *, dtype: str = "float32") -> bool:
        """Store ``array`` (cast to ``dtype``, one of :data:`STORE_DTYPES`) under ``key``, atomically.

        Returns False when it was not stored: writing is off after a failed
        write (see :class:`WriteGuard`).
        """
        arr = np.ascontiguousarray(array, dtype=_check_dtype(dtype))
        array_path, meta_path = self._paths(key)
        meta = {
            "format": STORE_FORMAT_VERSION,
            "settings": json.loads(_canonical(settings)),
            "dtype": dtype,
            "shape": list(arr.shape),
            "sha256": _array_sha256(arr),
        }

        def write() -> None:
            array_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(array_path, arr)
            atomic_write_text(meta_path, json.dumps(meta, sort_keys=True, indent=1))

        return self.guard.write(write)

"""On-disk cache of per-image patch embeddings (the format of :mod:`anomclust_lite.files.array_store`).

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
Reading verifies every entry (a damaged one is a logged miss, recomputed),
a hit marks the entry as used (least-recently-used eviction), and a write
that fails turns caching off with one warning; see
:class:`~anomclust_lite.files.array_store.ArrayStore`.
"""

from __future__ import annotations

import hashlib

from ..files.array_store import STORE_DTYPES, STORE_FORMAT_VERSION, ArrayStore

__all__ = ["CACHE_FORMAT_VERSION", "CACHE_DTYPES", "FeatureCache", "file_sha256"]

#: Version of the cache layout and of the extraction recipe; part of every key.
CACHE_FORMAT_VERSION = STORE_FORMAT_VERSION
#: The array types an entry may hold.
CACHE_DTYPES = STORE_DTYPES


def file_sha256(data: bytes) -> str:
    """Hex sha256 of ``data`` (the bytes of an image file).

    Examples
    --------
    >>> file_sha256(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


class FeatureCache(ArrayStore):
    """A folder of cached bags, one ``.npy`` (+ ``.json``) per image and settings.

    Parameters
    ----------
    directory : str or os.PathLike
        Cache folder; created (with parents) if missing.
    guard : WriteGuard, optional
        Shared with the other stores of a cache folder (see
        :class:`~anomclust_lite.files.array_store.ArrayStore`).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> settings = {"model_sha256": "ab", "resize": 256}
    >>> key = cache.key(file_sha256(b"image bytes"), settings)
    >>> cache.get(key, settings) is None
    True
    >>> cache.put(key, np.ones((4, 2), np.float32), settings)
    True
    >>> float(cache.get(key, settings, shape=(4, 2)).sum())
    8.0
    """

    label = "feature cache"

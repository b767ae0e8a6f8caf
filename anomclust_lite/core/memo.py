"""Never compute a costly step twice: a cache hook passed in, keys from content and parameters.

The costly steps of the method (patch scores: the pairwise patch kernel;
embeddings; the trust signals' kernels; Hausdorff distances) take a
``cache`` argument: any object with the two methods of :class:`ArrayCache`
(:class:`anomclust_lite.files.cache_folder.CacheFolder` is the on-disk one),
or None for no caching. Nothing here is global: the caller passes the hook.

A step's key is :func:`step_key` of everything its result depends on: the
:func:`content_digest` of its input arrays (the bags as they are fed to the
kernel, so their dtype counts too) and its parameters; a changed input or
parameter is a different key, so a stale result is never returned. Values a
result does not depend on (thread counts, memory budgets) stay out of the
key, so changing them still hits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Optional, Protocol, Tuple

import numpy as np

__all__ = ["ArrayCache", "content_digest", "step_key", "memoized"]


class ArrayCache(Protocol):
    """What a cache hook provides (duck-typed; see the module docstring)."""

    def get(self, kind: str, key: str, shape: Tuple[int, ...], dtype: str) -> Optional[np.ndarray]:
        """The array stored under ``key`` with this ``shape`` and ``dtype``, or None."""

    def put(self, kind: str, key: str, array: np.ndarray, dtype: str) -> Any:
        """Store ``array`` under ``key`` (failing quietly is allowed: the result was computed)."""


def content_digest(*arrays: Optional[np.ndarray]) -> str:
    """Hex sha256 of the shapes, dtypes and bytes of ``arrays`` (None counts as a distinct value).

    Examples
    --------
    >>> a = np.zeros((2, 3), np.float32)
    >>> content_digest(a) == content_digest(a.copy()), content_digest(a) == content_digest(a.astype(np.float16))
    (True, False)
    >>> content_digest(None) == content_digest(np.zeros(0))
    False
    """
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"None;")
            continue
        arr = np.ascontiguousarray(array)
        digest.update(f"{arr.shape}{arr.dtype.str};".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def step_key(step: str, **parts: Any) -> str:
    """Hex sha256 of a step's name and its parts (JSON values: numbers, strings, None, lists, digests).

    Examples
    --------
    >>> step_key("scores", q=0.1, aggregate="mean") == step_key("scores", aggregate="mean", q=0.1)
    True
    >>> step_key("scores", q=0.1) == step_key("scores", q=0.2)
    False
    """
    payload = json.dumps({"step": step, **parts}, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def memoized(
    cache: Optional[ArrayCache],
    kind: str,
    key: str,
    shape: Tuple[int, ...],
    dtype: str,
    compute: Callable[[], np.ndarray],
) -> Tuple[np.ndarray, bool]:
    """``(array, hit)``: the cached array under ``key``, else ``compute()`` (stored when ``cache`` is given).

    The computed array is returned as ``dtype``, exactly as a later hit will
    return it, so a hit and a miss give the same bytes.

    Examples
    --------
    >>> class Dict(dict):
    ...     def get(self, kind, key, shape, dtype):
    ...         return super().get((kind, key))
    ...     def put(self, kind, key, array, dtype):
    ...         self[(kind, key)] = array
    >>> memo = Dict()
    >>> memoized(memo, "scores", "k", (2,), "float32", lambda: np.ones(2))[1]
    False
    >>> memoized(memo, "scores", "k", (2,), "float32", lambda: 1 / 0)[1]
    True
    """
    if cache is not None:
        found = cache.get(kind, key, tuple(shape), dtype)
        if found is not None:
            return found, True
    array = np.ascontiguousarray(compute(), dtype=dtype)
    if array.shape != tuple(shape):
        raise AssertionError(f"{kind}: computed shape {array.shape}, expected {tuple(shape)}")
    if cache is not None:
        cache.put(kind, key, array, dtype)
    return array, False

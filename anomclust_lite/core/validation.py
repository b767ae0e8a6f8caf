"""Input validation shared by the public functions.

Every public function validates its inputs once, here, and raises
``ValueError`` with a message that names the argument, says what was wrong
and what to do. Internal helpers trust their inputs.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple

import numpy as np

from .defaults import THREADS_PER_CPU_MAX
from .kernel import available_cpus

__all__ = [
    "UNIT_NORM_ATOL",
    "check_bags",
    "check_finite_array",
    "check_int",
    "check_memory_mb",
    "check_n_threads",
    "check_positive_float",
    "check_labels",
    "check_cluster_ids",
    "check_clustered",
    "check_choice",
]

#: Tolerance on ``|‖z‖ − 1|`` for a patch to count as unit-norm.  Generous
#: enough for float16 storage, tight enough to catch unnormalised features.
UNIT_NORM_ATOL = 2e-3


def check_bags(
    bags: object,
    name: str = "bags",
    *,
    min_images: int = 1,
    dim: Optional[int] = None,
    check_norm: bool = True,
) -> np.ndarray:
    """Validate a bag array and return it as float32 or float16, C-contiguous.

    Bags must be a 3-D array ``(N, M, D)`` of finite, unit-norm rows.
    Non-unit rows are **rejected** (not silently renormalised): call
    :func:`anomclust_lite.normalize_patches` first.
    """
    arr = np.asarray(bags)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be a 3-D array (images, patches, dims); got ndim={arr.ndim} "
            f"with shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array; got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float16):
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr)
    n, m, d = arr.shape
    if n < min_images:
        raise ValueError(f"{name} must hold at least {min_images} image(s); got N={n}")
    if m < 1 or d < 1:
        raise ValueError(f"{name} must have at least one patch and one dimension; got shape {arr.shape}")
    if dim is not None and d != dim:
        raise ValueError(f"{name} has D={d} dimensions but {dim} were expected (mismatched feature size)")
    if check_norm:
        # Chunked so the check never needs a float32 copy of a huge float16 array.
        step = max(1, (1 << 22) // max(1, m * d))
        for s in range(0, n, step):
            chunk = arr[s : s + step].astype(np.float32, copy=False)
            if not np.isfinite(chunk).all():
                raise ValueError(f"{name} contains NaN or inf values (image index >= {s}); check the features")
            norms = np.sqrt(np.einsum("nmd,nmd->nm", chunk, chunk, dtype=np.float64))
            bad = np.abs(norms - 1.0) > UNIT_NORM_ATOL
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise ValueError(
                    f"{name} rows must be L2-normalised (unit norm); patch {j} of image {s + i} "
                    f"has norm {norms[i, j]:.4g}. Call anomclust_lite.normalize_patches(bags) first"
                )
    return arr


def check_finite_array(x: object, name: str, ndim: int) -> np.ndarray:
    """Return ``x`` as a float64 array of the given ndim with finite values."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array; got ndim={arr.ndim} with shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def check_int(value: object, name: str, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """Return ``value`` as int, checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}; got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}; got {v}")
    return v


def check_positive_float(value: object, name: str) -> float:
    """Return ``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number; got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return v


def check_memory_mb(value: object, name: str = "memory_mb") -> float:
    """Return the memory budget in MiB as a float > 0."""
    return check_positive_float(value, name)


def check_labels(labels: object, name: str) -> np.ndarray:
    """Return a 1-D label array (any hashable values, compared by equality)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels; got shape {arr.shape}")
    return arr


def check_cluster_ids(labels: object, n: int, k: int) -> np.ndarray:
    """Return ``labels`` as ``n`` int64 cluster ids in ``0..k-1``; raises ValueError naming ``labels`` otherwise."""
    lab = np.asarray(labels)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer cluster ids; got shape {lab.shape}, dtype {lab.dtype}")
    if n and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must be cluster ids in 0..{k - 1}; got values in {lab.min()}..{lab.max()}")
    return lab.astype(np.int64)


def check_clustered(embeddings: object, centers: object, labels: object) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``embeddings`` (N, D) and ``centers`` (K >= 1, D) as finite float64, ``labels`` as their N cluster ids."""
    x = check_finite_array(embeddings, "embeddings", 2)
    c = check_finite_array(centers, "centers", 2)
    if c.shape[0] < 1 or c.shape[1] != x.shape[1]:
        raise ValueError(f"centers must be (K >= 1, {x.shape[1]}); got shape {c.shape}")
    return x, c, check_cluster_ids(labels, x.shape[0], c.shape[0])


def check_choice(value: object, name: str, choices: "tuple[str, ...]") -> str:
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_n_threads(value: object, name: str = "n_threads") -> Optional[int]:
    """``None`` (one thread per available CPU) or a thread count from 1 to THREADS_PER_CPU_MAX per usable CPU.

    The one thread cap: the estimator, the kernels, the extractor and the
    command line's ``--threads`` all check it here.
    """
    if value is None:
        return None
    threads = check_int(value, name, low=1)
    cap = THREADS_PER_CPU_MAX * available_cpus()
    if threads > cap:
        raise ValueError(
            f"{name} is {threads}, more than {THREADS_PER_CPU_MAX} per CPU this process may use ({cap}); "
            f"use at most {cap}, or leave it out for one thread per CPU"
        )
    return threads

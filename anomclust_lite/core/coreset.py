"""A compact normal bank: greedy k-centre coreset of the labelled normal patches.

Semi-supervised scores (Eq. 6) take every patch's distance to the nearest
patch of the labelled normal images, so their cost grows with the normal
bank (MTD: 762 images x 784 patches = 597k patches) although neighbouring
normal patches are nearly the same. As in PatchCore (Roth et al., CVPR 2022),
the bank is reduced to a coreset chosen by greedy k-centre ("farthest point
first") on a seeded Gaussian random projection of the patches: each pick is
the patch farthest from those picked so far, so the kept patches cover the
bank with a small radius and the nearest-normal distance of any patch grows
by at most about that radius.

Greedy k-centre is sequential (one pass over the points per pick), so on a
CPU it runs on *chunks* of consecutive patches (:data:`CHUNK_PATCHES`), each
chunk keeping its share of the picks. This bounds the memory (one projected
chunk, small enough to stay in a core's cache) and makes the cost linear in
the bank (``size x chunk x projection_dim`` multiply-adds) instead of
``size x bank``. Within a chunk the picks are a greedy sequence,
and a chunk's share never shrinks when ``size`` grows, so a larger coreset
contains every smaller one (its covering radius is never larger).

Everything is deterministic given ``seed`` (the projection and every chunk's
first pick come from ``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

from .kernel import available_cpus, limit_blas
from .validation import check_bags, check_int, check_n_threads

__all__ = [
    "PROJECTION_DIM",
    "CHUNK_PATCHES",
    "MIN_CORESET_PATCHES",
    "coreset_size",
    "random_projection",
    "kcenter_greedy",
    "coreset_indices",
    "coreset_count",
    "bank_rows",
    "source_rows",
    "compact_bank",
]

#: Dimension of the random projection the distances are taken in (PatchCore's 128).
PROJECTION_DIM = 128
#: Patches per chunk of the greedy selection (about ten 28 x 28 images).
CHUNK_PATCHES = 8192
#: A fraction never keeps fewer patches than this (about ten 28 x 28 images): smaller banks
#: are kept whole, scoring against them is cheap anyway.
MIN_CORESET_PATCHES = 8192


def coreset_size(bank_size: object, n: int) -> int:
    """Patches kept from a bank of ``n``: ``bank_size`` patches (int), or that fraction of ``n`` (float).

    An integer is a number of patches (at most ``n``); a float in (0, 1] is a
    fraction, rounded up, but never fewer than :data:`MIN_CORESET_PATCHES`
    (or all ``n`` when there are fewer); ``1.0`` keeps every patch.

    Examples
    --------
    >>> coreset_size(0.1, 200_000), coreset_size(0.1, 20_000), coreset_size(0.1, 1000), coreset_size(250, 1000)
    (20000, 8192, 1000, 250)
    """
    if isinstance(bank_size, bool) or not isinstance(bank_size, numbers.Real):
        raise ValueError(f"bank_size must be a number of patches (int >= 1) or a fraction in (0, 1]; got {bank_size!r}")
    if isinstance(bank_size, numbers.Integral):
        return min(check_int(bank_size, "bank_size", low=1), n)
    frac = float(bank_size)
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"bank_size as a fraction must lie in (0, 1]; got {bank_size!r} "
                         "(pass an int for a number of patches)")
    return min(n, max(MIN_CORESET_PATCHES, math.ceil(frac * n - 1e-9)))


def random_projection(dim: int, out_dim: int, seed: int) -> np.ndarray:
    """A ``(dim, out_dim)`` float32 Gaussian projection scaled by ``1/sqrt(out_dim)`` (Johnson-Lindenstrauss).

    Distances after projection match the original ones up to a factor near 1.
    """
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, out_dim)) / math.sqrt(out_dim)).astype(np.float32)


def _greedy(points: np.ndarray, count: int, start: int) -> np.ndarray:
    """``count`` greedy k-centre picks among ``points`` (C, d) float32, the first ``start``; indices in pick order."""
    sq = np.einsum("cd,cd->c", points, points)
    nearest = np.full(points.shape[0], np.inf, dtype=np.float32)
    picks = np.empty(count, dtype=np.int64)
    cur = int(start)
    for t in range(count):
        picks[t] = cur
        d2 = points @ points[cur]
        d2 *= -2.0
        d2 += sq
        d2 += sq[cur]
        np.minimum(nearest, d2, out=nearest)
        nearest[cur] = -np.inf  # never picked twice, even among duplicates
        cur = int(nearest.argmax())
    return picks


def kcenter_greedy(points: np.ndarray, size: int, *, start: int = 0) -> np.ndarray:
    """Greedy k-centre on all of ``points`` (n, d): ``size`` distinct indices in pick order.

    The first pick is ``start``; each next pick is the point farthest (squared
    Euclidean, float32) from the points picked so far. This is the exact
    greedy that :func:`coreset_indices` runs on each chunk.

    Examples
    --------
    >>> pts = np.array([[0.0], [1.0], [10.0], [4.0]], dtype=np.float32)
    >>> kcenter_greedy(pts, 3).tolist()
    [0, 2, 3]
    """
    arr = np.asarray(points, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (n, d) array; got shape {arr.shape}")
    k = check_int(size, "size", low=1, high=arr.shape[0])
    s = check_int(start, "start", low=0, high=arr.shape[0] - 1)
    return _greedy(arr, k, s)


def _chunks(n: int, chunk: int) -> List[Tuple[int, int]]:
    """``(begin, end)`` of ``ceil(n / chunk)`` consecutive chunks whose sizes differ by at most one."""
    n_chunks = max(1, math.ceil(n / chunk))
    bounds = np.linspace(0, n, n_chunks + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def coreset_indices(
    patches: np.ndarray,
    size: int,
    *,
    seed: int = 0,
    projection_dim: int = PROJECTION_DIM,
    chunk_patches: int = CHUNK_PATCHES,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """Sorted indices of a greedy k-centre coreset of ``patches`` (n, D), chunked.

    Parameters
    ----------
    patches : ndarray, shape (n, D)
        Patch embeddings (float32 or float16), e.g. every patch of the normal images.
    size : int
        Patches to keep; each chunk keeps ``ceil(size * chunk / n)``, so up to
        one more per chunk than ``size`` may be kept. ``size >= n`` keeps all.
    seed : int
        Seed of the projection and of every chunk's first pick.
    projection_dim : int
        Dimension the distances are measured in (no projection when ``>= D``).
    chunk_patches : int
        Patches per chunk of the greedy selection.
    n_threads : int, optional
        Threads running chunks side by side (each on a one-thread BLAS);
        default one per available CPU. The result does not depend on it.

    Returns
    -------
    ndarray of int64
        Distinct indices into ``patches``, ascending.

    Examples
    --------
    >>> pts = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    >>> idx = coreset_indices(pts, 50, seed=1, chunk_patches=250)
    >>> idx.size, bool((np.diff(idx) > 0).all()), bool(np.isin(coreset_indices(pts, 20, seed=1, chunk_patches=250), idx).all())
    (52, True, True)
    """
    arr = np.asarray(patches)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"patches must be a non-empty (n, D) array; got shape {arr.shape}")
    n, d = arr.shape
    k = check_int(size, "size", low=1)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(check_int(seed, "seed", low=0))
    out_dim = check_int(projection_dim, "projection_dim", low=1)
    proj = np.eye(d, dtype=np.float32) if out_dim >= d else random_projection(d, out_dim, int(rng.integers(2**32)))
    spans = _chunks(n, check_int(chunk_patches, "chunk_patches", low=2))
    starts = [int(rng.integers(b - a)) for a, b in spans]

    def chunk_picks(i: int) -> np.ndarray:
        a, b = spans[i]
        count = min(b - a, math.ceil(k * (b - a) / n - 1e-9))
        return _greedy(np.asarray(arr[a:b], dtype=np.float32) @ proj, count, starts[i]) + a

    workers = min(len(spans), check_n_threads(n_threads) or available_cpus())
    with limit_blas(1), ThreadPoolExecutor(workers, thread_name_prefix="anomclust-coreset") as pool:
        picks = list(pool.map(chunk_picks, range(len(spans))))
    return np.sort(np.concatenate(picks))


def compact_bank(
    normal_bags: np.ndarray,
    bank_size: object,
    *,
    seed: int = 0,
    projection_dim: int = PROJECTION_DIM,
    chunk_patches: int = CHUNK_PATCHES,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """The coreset of the normal patches, as bags ``(R', M, D)`` for :func:`~anomclust_lite.core.scores.normal_scores`.

    The kept patches fill ``R' = ceil(kept / M)`` rows of ``M`` patches (the
    last row padded with copies of a kept patch, which leave every nearest
    distance unchanged), so the scoring kernel runs on image-sized blocks as
    with whole images. The bank is returned as it is when the coreset keeps
    every patch.

    Parameters
    ----------
    normal_bags : ndarray, shape (R, M, D)
        Unit-norm patch embeddings of the labelled normal images.
    bank_size : int or float
        Patches to keep (int), or that fraction of the ``R * M`` patches (float
        in (0, 1], at least :data:`MIN_CORESET_PATCHES`); see :func:`coreset_size`.
    seed, projection_dim, chunk_patches, n_threads
        As in :func:`coreset_indices`.

    Returns
    -------
    ndarray, shape (R', M, D), the dtype of ``normal_bags``

    Examples
    --------
    >>> from anomclust_lite import normalize_patches, normal_scores
    >>> normals = normalize_patches(np.random.default_rng(0).normal(size=(6, 16, 8)))
    >>> compact_bank(normals, 24).shape
    (2, 16, 8)
    >>> bool((normal_scores(normals, compact_bank(normals, 1.0)) < 1e-3).all())
    True
    """
    arr = check_bags(normal_bags, "normal_bags", min_images=1)
    r, m, d = arr.shape
    k = coreset_size(bank_size, r * m)
    if k >= r * m:
        return arr
    idx = coreset_indices(arr.reshape(r * m, d), k, seed=seed, projection_dim=projection_dim,
                          chunk_patches=chunk_patches, n_threads=n_threads)
    return bank_rows(arr, idx)


def coreset_count(n: int, size: int, chunk_patches: int = CHUNK_PATCHES) -> int:
    """How many indices :func:`coreset_indices` returns for ``n`` patches and ``size`` (each chunk rounds up).

    Examples
    --------
    >>> coreset_count(1000, 50, 250), coreset_count(1000, 2000, 250)
    (52, 1000)
    """
    if size >= n:
        return n
    return sum(min(b - a, math.ceil(size * (b - a) / n - 1e-9)) for a, b in _chunks(n, chunk_patches))


def bank_rows(normal_bags: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The patches ``idx`` (into the flattened ``(R * M, D)`` bank) as rows of ``M`` patches, the last padded.

    The padding repeats the first kept patch, which leaves every nearest distance unchanged.
    """
    r, m, d = normal_bags.shape
    rows = math.ceil(idx.size / m)
    padded = np.concatenate([idx, np.full(rows * m - idx.size, idx[0], dtype=np.int64)])
    return normal_bags.reshape(r * m, d)[padded].reshape(rows, m, d)


def source_rows(normal_bags: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The patches ``idx`` grouped into rows that each hold patches of one source image, and each row's source.

    ``idx`` indexes the flattened ``(R * M, D)`` bank, so patch ``idx[j]``
    comes from image ``idx[j] // M``. Every row holds ``w`` patches (about the
    mean count per source image), the last row of an image padded with copies
    of its own first patch, which leave every nearest distance unchanged. With
    ``groups`` of :func:`~anomclust_lite.core.scores.normal_scores` the rows
    give each normal image's distance to the coreset without its own patches.

    Examples
    --------
    >>> bags = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1)
    >>> rows, src = source_rows(bags, np.array([0, 1, 2, 5]))
    >>> rows[..., 0].tolist(), src.tolist()
    ([[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]], [0, 0, 1])
    """
    r, m, d = normal_bags.shape
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    sources, starts, counts = np.unique(idx // m, return_index=True, return_counts=True)
    w = max(1, math.ceil(idx.size / sources.size))
    picks: List[np.ndarray] = []
    row_src: List[int] = []
    for s, a, c in zip(sources.tolist(), starts.tolist(), counts.tolist()):
        n_rows = math.ceil(c / w)
        own = np.concatenate([idx[a:a + c], np.full(n_rows * w - c, idx[a], dtype=np.int64)])
        picks.append(own)
        row_src.extend([s] * n_rows)
    flat = np.concatenate(picks)
    return normal_bags.reshape(r * m, d)[flat].reshape(-1, w, d), np.array(row_src, dtype=np.int64)

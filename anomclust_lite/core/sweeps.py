"""One pass over the image pairs, many settings: the computations behind parameter sweeps.

:func:`anomclust_lite.patch_scores` and :func:`anomclust_lite.hausdorff_distances`
each run the blocked kernel once per call. A study that compares every score
aggregate and every Hausdorff variant (the paper's Table 5) or several labelled
normal subsets (its Figure 8) would repeat the dominant cost each time. Here the
kernel runs once:

- :func:`nearest_patch_similarities` keeps the ``(N, M, N)`` best-match tensor
  (``4 N^2 M`` bytes: 80 MB for 160 images of 784 patches), from which
  :func:`scores_from_matches` gives every aggregate of :func:`patch_scores` and
  :func:`hausdorff_from_matches` every Hausdorff variant, equal to the direct
  functions;
- :func:`tiered_normal_scores` gives :func:`normal_scores` for nested subsets of
  the normal images (drawn by :func:`nested_subsets`) in one pass over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .kernel import block_reductions, sims_to_dists
from .validation import check_bags, check_choice, check_int, check_memory_mb, check_n_threads, check_positive_float
from .defaults import DEFAULT_AGGREGATE, DEFAULT_MEMORY_MB, DEFAULT_TOPK_FRACTION
from .hausdorff import HAUSDORFF_INNER, HAUSDORFF_OUTER, directed_distances, symmetrise
from .scores import AGGREGATES, ScoreAggregator, check_q, kept_images

__all__ = [
    "PatchMatches",
    "nearest_patch_similarities",
    "scores_from_matches",
    "hausdorff_from_matches",
    "nested_subsets",
    "tiered_normal_scores",
]

#: Images per chunk when reducing the (N, M, N) match tensor.
_CHUNK_IMAGES = 16


@dataclass
class PatchMatches:
    """Best-match similarities between every patch and every other image.

    ``sims[i, m, j] = max_n <z_im, z_jn>``: the cosine similarity of patch
    ``m`` of image ``i`` to its nearest patch in image ``j`` (the entry
    ``j == i`` is 1 and excluded by every reduction). ``mean_mean[i, j]`` is
    the mean patch distance between images ``i`` and ``j`` (zero diagonal),
    or None when it was not accumulated.

    Attributes
    ----------
    sims : ndarray, shape (N, M, N), float32
    mean_mean : ndarray, shape (N, N), float64, or None
    """

    sims: np.ndarray
    mean_mean: Optional[np.ndarray] = None


def _check_matches(matches: object) -> PatchMatches:
    if not isinstance(matches, PatchMatches):
        raise TypeError(f"matches must come from nearest_patch_similarities(); got {type(matches).__name__}")
    return matches


def nearest_patch_similarities(
    bags: np.ndarray,
    *,
    memory_mb: float = DEFAULT_MEMORY_MB,
    mean_mean: bool = False,
    n_threads: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> PatchMatches:
    """One pass over all image pairs: the ``(N, M, N)`` best-match tensor.

    Every unsupervised score aggregate (:func:`scores_from_matches`) and every
    Hausdorff variant but ``mean-mean`` (:func:`hausdorff_from_matches`)
    follows from it; ``mean_mean=True`` also accumulates the mean-mean
    distances in the same pass.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings, N >= 2.
    memory_mb : float
        Working-memory budget of the kernel in MiB; the result itself
        (``4 N^2 M`` bytes, plus ``8 N^2`` with ``mean_mean``) comes on top.
    mean_mean : bool
        Also accumulate the mean patch distance of every pair.
    n_threads : int, optional
        CPU threads of the kernel (the BLAS included); default one per
        available CPU. Results do not depend on it.
    progress : callable, optional
        ``progress(done, total)``: image pairs compared so far.

    Returns
    -------
    PatchMatches

    Examples
    --------
    >>> from anomclust_lite import normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(3, 4, 2)))
    >>> nearest_patch_similarities(bags, memory_mb=1).sims.shape
    (3, 4, 3)
    """
    arr = check_bags(bags, "bags", min_images=2)
    mem = check_memory_mb(memory_mb)
    nt = check_n_threads(n_threads)
    n, m, _ = arr.shape
    sims = np.empty((n, m, n), dtype=np.float32)
    sims[np.arange(n), :, np.arange(n)] = 1.0  # self-matches: excluded by every reduction
    mm = np.zeros((n, n), dtype=np.float64) if mean_mean else None
    patches = np.arange(m)
    for res in block_reductions(arr, memory_mb=mem, col_max=True, mean_dist=mean_mean, workers=nt, progress=progress):
        ra, cb = res.rows, res.cols
        sims[np.ix_(ra, patches, cb)] = res.row_max
        sims[np.ix_(cb, patches, ra)] = res.col_max
        if mm is not None:
            mm[np.ix_(ra, cb)] = res.mean_dist
            mm[np.ix_(cb, ra)] = res.mean_dist.T
    if mm is not None:
        mm = 0.5 * (mm + mm.T)
        np.fill_diagonal(mm, 0.0)
    return PatchMatches(sims=sims, mean_mean=mm)


def scores_from_matches(
    matches: PatchMatches, *, aggregate: str = DEFAULT_AGGREGATE, q: float = DEFAULT_TOPK_FRACTION
) -> np.ndarray:
    """Unsupervised patch scores, equal to :func:`anomclust_lite.patch_scores`.

    Parameters
    ----------
    matches : PatchMatches
        From :func:`nearest_patch_similarities`.
    aggregate, q
        As in :func:`anomclust_lite.patch_scores`.

    Returns
    -------
    ndarray, shape (N, M), float32

    Examples
    --------
    >>> from anomclust_lite import normalize_patches, patch_scores
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(4, 5, 3)))
    >>> got = scores_from_matches(nearest_patch_similarities(bags, memory_mb=1), aggregate="mean")
    >>> bool(np.allclose(got, patch_scores(bags)))
    True
    """
    matches = _check_matches(matches)
    check_choice(aggregate, "aggregate", AGGREGATES)
    qv = check_q(q, aggregate)
    sims = matches.sims
    n, m, _ = sims.shape
    agg = ScoreAggregator(n, m, aggregate, kept_images(aggregate, qv, n - 1))
    for s in range(0, n, _CHUNK_IMAGES):
        idx = np.arange(s, min(n, s + _CHUNK_IMAGES))
        chunk = sims[idx]  # fancy indexing: a copy (c, M, N)
        chunk[np.arange(idx.size), :, idx] = agg.neutral  # an image is not its own neighbour
        agg.add(idx, chunk)
    return agg.result(np.full(n, n - 1, dtype=np.float64))


def hausdorff_from_matches(matches: PatchMatches, *, inner: str = "max-min", outer: str = "max") -> np.ndarray:
    """Hausdorff-family distances, equal to :func:`anomclust_lite.hausdorff_distances`.

    Parameters
    ----------
    matches : PatchMatches
        From :func:`nearest_patch_similarities` (with ``mean_mean=True`` for
        ``inner="mean-mean"``).
    inner, outer
        As in :func:`anomclust_lite.hausdorff_distances`.

    Returns
    -------
    ndarray, shape (N, N), float64
        Symmetric, zero diagonal.

    Examples
    --------
    >>> from anomclust_lite import normalize_patches, hausdorff_distances
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(4, 5, 3)))
    >>> got = hausdorff_from_matches(nearest_patch_similarities(bags, memory_mb=1), inner="max-min")
    >>> bool(np.allclose(got, hausdorff_distances(bags)))
    True
    """
    matches = _check_matches(matches)
    check_choice(inner, "inner", HAUSDORFF_INNER)
    check_choice(outer, "outer", HAUSDORFF_OUTER)
    if inner == "mean-mean":
        if matches.mean_mean is None:
            raise ValueError("inner='mean-mean' needs nearest_patch_similarities(..., mean_mean=True)")
        return matches.mean_mean.copy()
    sims = matches.sims
    n = sims.shape[0]
    directed = np.empty((n, n), dtype=np.float64)
    for s in range(0, n, _CHUNK_IMAGES):
        sl = slice(s, min(n, s + _CHUNK_IMAGES))
        directed[sl] = directed_distances(sims[sl], inner)
    return symmetrise(directed, inner, outer)


def nested_subsets(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Tier of each of ``n`` images for nested, seeded subsets.

    Subset ``t`` holds ``max(1, round(fractions[t] * n))`` images of one
    seeded permutation, so each subset contains the smaller ones; image ``r``
    belongs to subset ``t`` iff ``tier[r] <= t`` (images in no subset get
    ``len(fractions)``).

    Parameters
    ----------
    n : int
        Number of images, >= 1.
    fractions : sequence of float
        Increasing subset sizes as fractions of ``n``, within (0, 1].
    seed : int
        Seed of the permutation.

    Returns
    -------
    ndarray, shape (n,), int64

    Examples
    --------
    >>> t = nested_subsets(10, [0.2, 0.5, 1.0], seed=0)
    >>> [int((t <= i).sum()) for i in range(3)]
    [2, 5, 10]
    """
    n = check_int(n, "n", low=1)
    fr = [check_positive_float(f, "fractions") for f in fractions]
    if any(f > 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise ValueError(f"fractions must increase within (0, 1]; got {list(fractions)}")
    counts = [max(1, int(round(f * n))) for f in fr]
    order = np.random.default_rng(seed).permutation(n)
    tier = np.full(n, len(fr), dtype=np.int64)
    for t in range(len(fr) - 1, -1, -1):
        tier[order[: counts[t]]] = t
    return tier


def tiered_normal_scores(
    bags: np.ndarray,
    normal_bags: np.ndarray,
    tiers: np.ndarray,
    *,
    n_tiers: int,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """Semi-supervised scores of nested normal subsets in one pass.

    Entry ``t`` of the result equals
    ``normal_scores(bags, normal_bags[tiers <= t])``; normal images with a
    tier ``>= n_tiers`` are not compared at all.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings of the images to score.
    normal_bags : ndarray, shape (R, M', D)
        Unit-norm patch embeddings of labelled normal images.
    tiers : array of int, shape (R,)
        Non-negative tier of each normal image, e.g. from :func:`nested_subsets`.
    n_tiers : int
        Number of nested subsets to score; each must hold a normal image.
    memory_mb : float
        Working-memory budget of the kernel in MiB.
    n_threads : int, optional
        CPU threads of the kernel (the BLAS included); default one per
        available CPU. Results do not depend on it.

    Returns
    -------
    ndarray, shape (n_tiers, N, M), float32

    Examples
    --------
    >>> from anomclust_lite import normalize_patches, normal_scores
    >>> rng = np.random.default_rng(0)
    >>> bags, normal = (normalize_patches(rng.normal(size=s)) for s in [(3, 4, 2), (5, 4, 2)])
    >>> tiers = np.array([1, 0, 1, 2, 0])
    >>> got = tiered_normal_scores(bags, normal, tiers, n_tiers=2, memory_mb=1)
    >>> bool(np.allclose(got[1], normal_scores(bags, normal[tiers <= 1])))
    True
    """
    arr = check_bags(bags, "bags", min_images=1)
    normals = check_bags(normal_bags, "normal_bags", min_images=1, dim=arr.shape[2])
    raw = np.asarray(tiers)
    n_tiers = check_int(n_tiers, "n_tiers", low=1)
    if raw.shape != (normals.shape[0],):
        raise ValueError(f"tiers must hold one tier per normal image ({normals.shape[0]}); got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.integer) or (raw.size and raw.min() < 0):
        raise ValueError(f"tiers must be non-negative integers; got dtype {raw.dtype}, min {raw.min()}")
    tiers = raw.astype(np.int64)
    used = np.flatnonzero(tiers < n_tiers)
    if used.size == 0:
        raise ValueError("tiers leave no normal image in any of the n_tiers subsets")
    n, m, _ = arr.shape
    best = np.full((n_tiers, n, m), -np.inf, dtype=np.float32)
    results = block_reductions(
        arr, normals, memory_mb=check_memory_mb(memory_mb), col_index=used, workers=check_n_threads(n_threads)
    )
    for res in results:
        row_max = res.row_max  # (a, M, b)
        block_tiers = tiers[res.cols]
        rows = res.rows
        for t in np.unique(block_tiers):
            best[t, rows] = np.maximum(best[t, rows], row_max[:, :, block_tiers == t].max(axis=2))
    np.maximum.accumulate(best, axis=0, out=best)
    if not np.isfinite(best).all():
        raise ValueError("some normal subset is empty; use larger fractions")
    return sims_to_dists(best, out=best)

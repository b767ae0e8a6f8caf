"""Per-patch anomaly scores: how far each patch is from the patches of other images.

Unsupervised (Eq. 5 of Sohn et al.): for patch ``z_im`` of image ``i``,
``min_n ||z_im - z_jn||`` is its distance to image ``j``; the score aggregates
these over the other images ``j != i`` (mean, max, min, or the mean of the
closest fraction ``q``). A patch that is far from every other image is
anomalous. Semi-supervised (Eq. 6): the distance to the nearest patch of any
labelled normal image.

All functions run on the blocked kernel of :mod:`anomclust_lite.core.kernel`: one
SGEMM per unordered image pair serves both directions, and the working memory
stays within ``memory_mb`` plus O(N*M) accumulators.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional, Tuple

import numpy as np

from .kernel import BlockResult, block_reductions, n_pairs, sims_to_dists
from .validation import check_bags, check_choice, check_int, check_memory_mb, check_n_threads, check_positive_float
from .defaults import DEFAULT_AGGREGATE, DEFAULT_MEMORY_MB, DEFAULT_TOPK_FRACTION

__all__ = [
    "AGGREGATES",
    "ScoreAggregator",
    "patch_scores",
    "patch_scores_and_nearest",
    "cross_patch_scores",
    "cross_patch_aggregates",
    "normal_scores",
    "topk_count",
    "kept_images",
    "check_q",
]

logger = logging.getLogger(__name__)

#: ``progress(done, total)`` in image pairs, called as the kernel works (see :func:`~anomclust_lite.core.kernel.block_reductions`).
Progress = Callable[[int, int], None]

#: Ways of aggregating a patch's distances to the other images.
AGGREGATES = ("mean", "max", "min", "topk_mean")


class ScoreAggregator:
    """Accumulates per-(image, patch) aggregates of best-match similarities.

    The one implementation of the four aggregates of Eq. 5: the blocked
    scores of this module fold kernel blocks in as they come, and
    :func:`anomclust_lite.core.sweeps.scores_from_matches` folds rows of the
    stored match tensor. Works on similarities ``s`` (distance
    ``sqrt(2 - 2 s)`` is decreasing in ``s``), so "max distance" is "min
    similarity" and the top-k nearest images are the k largest
    similarities; only ``mean`` converts every value.
    """

    #: Similarity that leaves each aggregate unchanged (distance 0 adds nothing to a sum).
    NEUTRAL = {"mean": 1.0, "max": np.inf, "min": -np.inf, "topk_mean": -np.inf}

    def __init__(self, n: int, m: int, aggregate: str, k: int) -> None:
        self.aggregate = aggregate
        self.k = k
        self.neutral = self.NEUTRAL[aggregate]
        if aggregate == "mean":
            self.acc = np.zeros((n, m), dtype=np.float64)
        elif aggregate == "topk_mean":
            self.acc = np.full((n, m, k), -np.inf, dtype=np.float32)
        else:
            self.acc = np.full((n, m), self.neutral, dtype=np.float32)

    def add(self, rows: np.ndarray, sims: np.ndarray) -> None:
        """Fold ``sims[a, m, b]`` (row image ``rows[a]`` vs column image b) in."""
        agg = self.aggregate
        if agg == "mean":
            self.acc[rows] += sims_to_dists(sims).sum(axis=2, dtype=np.float64)
        elif agg == "max":
            self.acc[rows] = np.minimum(self.acc[rows], sims.min(axis=2))
        elif agg == "min":
            self.acc[rows] = np.maximum(self.acc[rows], sims.max(axis=2))
        else:
            merged = np.concatenate([self.acc[rows], sims], axis=2)
            kth = merged.shape[2] - self.k
            self.acc[rows] = np.partition(merged, kth, axis=2)[:, :, kth:]

    def result(self, counts: np.ndarray) -> np.ndarray:
        """Scores ``(N, M)`` float32; ``counts[i]`` images were aggregated for image i."""
        if self.aggregate == "mean":
            return (self.acc / counts[:, None]).astype(np.float32)
        if self.aggregate == "topk_mean":
            return sims_to_dists(self.acc).mean(axis=2, dtype=np.float64).astype(np.float32)
        return sims_to_dists(self.acc)


def check_q(q: object, aggregate: str) -> float:
    """``q`` as a float > 0; a fraction in (0, 1] for ``aggregate="topk_mean"``."""
    qv = check_positive_float(q, "q")
    if aggregate == "topk_mean" and qv > 1:
        raise ValueError(f"q must be a fraction in (0, 1]; got {q!r}")
    return qv


def topk_count(q: float, n_others: int) -> int:
    """Number of nearest images that ``aggregate="topk_mean"`` averages.

    ``max(1, floor(q * n_others))``, at most ``n_others``; the ``1e-9`` guard
    makes ``q * n_others`` that is an integer in exact arithmetic count as one.

    Parameters
    ----------
    q : float
        Fraction in (0, 1].
    n_others : int
        Number of other images, >= 1.

    Returns
    -------
    int

    Examples
    --------
    >>> topk_count(0.1, 159), topk_count(0.1, 5), topk_count(0.3, 10)
    (15, 1, 3)
    """
    qv = check_positive_float(q, "q")
    if qv > 1:
        raise ValueError(f"q must be a fraction in (0, 1]; got {q!r}")
    n = check_int(n_others, "n_others", low=1)
    return max(1, min(n, int(np.floor(qv * n + 1e-9))))


def kept_images(aggregate: str, q: float, n_others: int) -> int:
    """Images kept per patch by the aggregator (only ``topk_mean`` keeps more than none)."""
    return topk_count(q, n_others) if aggregate == "topk_mean" else 0


def _check_reference(reference: object, n: int) -> np.ndarray:
    ref = np.asarray(reference)
    if ref.ndim != 1 or not (np.issubdtype(ref.dtype, np.integer) or ref.size == 0):
        raise ValueError(f"reference must be a 1-D array of integer image indices; got {ref.dtype} shape {ref.shape}")
    ref = ref.astype(np.intp)
    if ref.size < 2:
        raise ValueError(f"reference must hold at least 2 image indices (each image needs another); got {ref.size}")
    if ref.min() < 0 or ref.max() >= n:
        raise ValueError(f"reference indices must lie in [0, {n - 1}]; got min {ref.min()}, max {ref.max()}")
    uniq = np.unique(ref)
    if uniq.size != ref.size:
        raise ValueError("reference contains duplicate image indices; pass each index once")
    return uniq


def _within(progress: Optional[Progress], offset: int, total: int) -> Optional[Progress]:
    """A ``progress`` for one of several kernel calls: its pairs counted after ``offset``, out of ``total``."""
    if progress is None:
        return None
    return lambda done, _: progress(offset + done, total)


class _NearestIn:
    """Each patch's best similarity to the patches of the images ``idx`` (its own image never among them), folded
    from blocks computed for another aggregate: only the columns that are images of ``idx`` are kept."""

    def __init__(self, n: int, m: int, idx: np.ndarray) -> None:
        self.member = np.zeros(n, dtype=bool)
        self.member[idx] = True
        self.agg = ScoreAggregator(n, m, "min", 1)

    def add(self, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray) -> None:
        """Fold ``sims[a, m, b]`` (row image ``rows[a]`` vs column image ``cols[b]``) in, for member columns."""
        keep = self.member[cols]
        if keep.all():
            self.agg.add(rows, sims)
        elif keep.any():
            self.agg.add(rows, sims[:, :, keep])


def _fold_pairs(results: Iterable[BlockResult], agg: ScoreAggregator, nearest: Optional[_NearestIn] = None) -> None:
    """Fold symmetric-mode results: each pair's block serves both directions (and ``nearest``, when given)."""
    for res in results:
        agg.add(res.rows, res.row_max)
        agg.add(res.cols, res.col_max)
        if nearest is not None:
            nearest.add(res.rows, res.cols, res.row_max)
            nearest.add(res.cols, res.rows, res.col_max)


def patch_scores(
    bags: np.ndarray,
    *,
    aggregate: str = DEFAULT_AGGREGATE,
    q: float = DEFAULT_TOPK_FRACTION,
    reference: Optional[np.ndarray] = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> np.ndarray:
    """Unsupervised anomaly score of every patch (Eq. 5 of the paper).

    For patch ``m`` of image ``i`` and each other image ``j``, the distance
    ``min_n ||z_im - z_jn||`` to image ``j`` is aggregated over ``j``:

    - ``"mean"``: the mean over ``j`` (the paper's default);
    - ``"max"`` / ``"min"``: the largest / smallest;
    - ``"topk_mean"``: the mean of the ``max(1, floor(q * (R - 1)))`` smallest,
      where ``R`` is the number of reference images: more robust when
      several images share a defect type, since a defect is then only far
      from the images without it.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings (float32, or float16 to halve storage).
        Rows that are not unit-norm are rejected; see
        :func:`anomclust_lite.normalize_patches`.
    aggregate : {"mean", "max", "min", "topk_mean"}
        How distances to the other images are aggregated.
    q : float
        Fraction of nearest images averaged by ``"topk_mean"``, in (0, 1].
    reference : array of int, optional
        Aggregate only over these images ``j != i`` (Eq. 7 subsampling);
        default: all images. Costs ``N * R`` instead of ``N^2 / 2`` pairs.
    memory_mb : float
        Working-memory budget of the kernel in MiB (the O(N*M) result and
        accumulators come on top).
    n_threads : int, optional
        CPU threads of the kernel (the BLAS included); default one per
        available CPU. Results do not depend on it.
    progress : callable, optional
        ``progress(done, total)``: image pairs compared so far, as the kernel works.

    Returns
    -------
    ndarray, shape (N, M), float32
        Patch scores, in patch-distance units (``[0, 2]``).

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import patch_scores, normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(5, 16, 8)))
    >>> patch_scores(bags).shape
    (5, 16)
    """
    arr, qv, ref, mem, nt = _scoring_inputs(bags, aggregate, q, reference, memory_mb, n_threads)
    return _scores(arr, aggregate, qv, ref, mem, nt, progress)[0]


def patch_scores_and_nearest(
    bags: np.ndarray,
    nearest_to: np.ndarray,
    *,
    aggregate: str = DEFAULT_AGGREGATE,
    q: float = DEFAULT_TOPK_FRACTION,
    reference: Optional[np.ndarray] = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`patch_scores`, and from the same image pairs each patch's distance to the nearest patch of the
    images ``nearest_to`` (never of its own image).

    The second result is what ``patch_scores(bags, aggregate="min", reference=nearest_to)`` gives, up to
    float32 rounding of the products (bit for bit when ``nearest_to`` is ``reference``), without comparing
    those pairs a second time: an unsupervised fit takes its novelty calibration from it (about half of
    the comparisons of the fit when both are needed). ``nearest_to`` must lie within the images scored
    against: every image (``reference`` None) or the images of ``reference``.

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import patch_scores, normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(5, 16, 8)))
    >>> scores, nearest = patch_scores_and_nearest(bags, np.array([0, 2, 3]))
    >>> bool(np.allclose(nearest, patch_scores(bags, aggregate="min", reference=np.array([0, 2, 3])), atol=1e-6))
    True
    """
    arr, qv, ref, mem, nt = _scoring_inputs(bags, aggregate, q, reference, memory_mb, n_threads)
    near = _check_reference(nearest_to, arr.shape[0])
    if ref is not None and np.setdiff1d(near, ref).size:
        raise ValueError("nearest_to must be images of reference (only their pairs are compared); "
                         f"{np.setdiff1d(near, ref).size} of its {near.size} are not")
    scores, nearest = _scores(arr, aggregate, qv, ref, mem, nt, progress, near)
    return scores, nearest


def _scoring_inputs(bags: np.ndarray, aggregate: str, q: float, reference: Optional[np.ndarray], memory_mb: float,
                    n_threads: Optional[int]) -> Tuple[np.ndarray, float, Optional[np.ndarray], float, Optional[int]]:
    """:func:`patch_scores`'s arguments validated: bags, q, reference (sorted), memory budget, threads."""
    arr = check_bags(bags, "bags", min_images=2)
    check_choice(aggregate, "aggregate", AGGREGATES)
    qv = check_q(q, aggregate)
    ref = None if reference is None else _check_reference(reference, arr.shape[0])
    return arr, qv, ref, check_memory_mb(memory_mb), check_n_threads(n_threads)


def _scores(arr: np.ndarray, aggregate: str, q: float, ref: Optional[np.ndarray], mem: float, nt: Optional[int],
            progress: Optional[Progress], near: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The one implementation of Eq. 5 (``ref`` None) and Eq. 7 over validated inputs; with ``near``, also
    the nearest-patch distances to those images (:func:`patch_scores_and_nearest`)."""
    n, m, _ = arr.shape
    nearest = None if near is None else _NearestIn(n, m, near)
    if ref is None:
        agg = ScoreAggregator(n, m, aggregate, kept_images(aggregate, q, n - 1))
        _fold_pairs(block_reductions(arr, memory_mb=mem, col_max=True, workers=nt, progress=progress), agg, nearest)
        counts = np.full(n, n - 1, dtype=np.float64)
    else:
        agg = ScoreAggregator(n, m, aggregate, kept_images(aggregate, q, ref.size - 1))
        others = np.setdiff1d(np.arange(n), ref)
        first = n_pairs(ref.size, ref.size, True)
        total = first + others.size * ref.size
        # Reference images against each other: symmetric, one block serves both directions.
        _fold_pairs(block_reductions(arr, memory_mb=mem, row_index=ref, col_max=True, workers=nt,
                                     progress=_within(progress, 0, total)), agg, nearest)
        # Remaining images against the reference images only (one direction).
        for res in block_reductions(arr, arr, memory_mb=mem, row_index=others, col_index=ref, workers=nt,
                                    progress=_within(progress, first, total)):
            agg.add(res.rows, res.row_max)
            if nearest is not None:
                nearest.add(res.rows, res.cols, res.row_max)
        counts = np.full(n, ref.size, dtype=np.float64)
        counts[ref] -= 1
    return agg.result(counts), None if nearest is None else nearest.agg.result(counts)


def cross_patch_scores(
    bags: np.ndarray,
    reference_bags: np.ndarray,
    *,
    aggregate: str = DEFAULT_AGGREGATE,
    q: float = DEFAULT_TOPK_FRACTION,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> np.ndarray:
    """Unsupervised patch scores of new images against a stored reference set.

    Like :func:`patch_scores`, but the distances of each image in ``bags``
    are aggregated over all images of ``reference_bags`` (for example a
    subsample of the images a model was fitted on). An image that also
    appears in the reference set is *not* excluded.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings of the images to score.
    reference_bags : ndarray, shape (R, M', D)
        Unit-norm patch embeddings of the reference images.
    aggregate, q, memory_mb, n_threads, progress
        As in :func:`patch_scores`; ``topk_mean`` averages
        ``max(1, floor(q * R))`` images.

    Returns
    -------
    ndarray, shape (N, M), float32

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import cross_patch_scores, normalize_patches
    >>> rng = np.random.default_rng(0)
    >>> new, ref = normalize_patches(rng.normal(size=(2, 9, 4))), normalize_patches(rng.normal(size=(3, 9, 4)))
    >>> cross_patch_scores(new, ref).shape
    (2, 9)
    """
    return cross_patch_aggregates(bags, reference_bags, (aggregate,), q=q, memory_mb=memory_mb,
                                  n_threads=n_threads, progress=progress)[0]


def cross_patch_aggregates(
    bags: np.ndarray,
    reference_bags: np.ndarray,
    aggregates: Tuple[str, ...],
    *,
    q: float = DEFAULT_TOPK_FRACTION,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> Tuple[np.ndarray, ...]:
    """:func:`cross_patch_scores` for several aggregates from one kernel pass (one result per aggregate).

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import normalize_patches
    >>> rng = np.random.default_rng(0)
    >>> new, ref = normalize_patches(rng.normal(size=(2, 9, 4))), normalize_patches(rng.normal(size=(3, 9, 4)))
    >>> mean, low = cross_patch_aggregates(new, ref, ("mean", "min"))
    >>> bool((low <= mean).all()), bool((mean == cross_patch_scores(new, ref)).all())
    (True, True)
    """
    arr = check_bags(bags, "bags", min_images=1)
    refs = check_bags(reference_bags, "reference_bags", min_images=1, dim=arr.shape[2])
    for aggregate in aggregates:
        check_choice(aggregate, "aggregate", AGGREGATES)
    qv = check_q(q, "topk_mean" if "topk_mean" in aggregates else "mean")
    mem = check_memory_mb(memory_mb)
    nt = check_n_threads(n_threads)
    n, m, _ = arr.shape
    r = refs.shape[0]
    aggs = [ScoreAggregator(n, m, a, kept_images(a, qv, r)) for a in aggregates]
    for res in block_reductions(arr, refs, memory_mb=mem, workers=nt, progress=progress):
        for agg in aggs:
            agg.add(res.rows, res.row_max)
    return tuple(agg.result(np.full(n, r, dtype=np.float64)) for agg in aggs)


def normal_scores(
    bags: np.ndarray,
    normal_bags: np.ndarray,
    *,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    progress: Optional[Progress] = None,
    groups: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> np.ndarray:
    """Semi-supervised patch scores: distance to the nearest normal patch (Eq. 6).

    ``score[i, m] = min over all patches z of all normal images ||z_im - z||``.
    The normal bank is streamed block by block, so it may be large
    (e.g. 200 images x 784 patches) without extra memory beyond ``memory_mb``.
    With ``groups = (bag_groups, bank_groups)`` (integer labels, ``(N,)`` and
    ``(R,)``), image ``i`` is not compared with the bank rows of its own group
    (leave one out: see :func:`anomclust_lite.core.coreset.source_rows`).

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings of the images to score.
    normal_bags : ndarray, shape (R, M', D)
        Unit-norm patch embeddings of labelled normal images.
    memory_mb : float
        Working-memory budget of the kernel in MiB.
    n_threads : int, optional
        CPU threads of the kernel (the BLAS included); default one per
        available CPU. Results do not depend on it.
    progress : callable, optional
        ``progress(done, total)``: image pairs compared so far.
    groups : (ndarray, ndarray), optional
        Group of every image and of every bank row; every image needs a bank
        row outside its group.

    Returns
    -------
    ndarray, shape (N, M), float32

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import normal_scores, normalize_patches
    >>> rng = np.random.default_rng(0)
    >>> bags = normalize_patches(rng.normal(size=(3, 9, 4)))
    >>> bool(np.allclose(normal_scores(bags, bags), 0, atol=1e-3))
    True
    """
    arr = check_bags(bags, "bags", min_images=1)
    normals = check_bags(normal_bags, "normal_bags", min_images=1, dim=arr.shape[2])
    mem = check_memory_mb(memory_mb)
    nt = check_n_threads(n_threads)
    n, m, _ = arr.shape
    own = _check_groups(groups, n, normals.shape[0])
    best = np.full((n, m), -np.inf, dtype=np.float32)
    for res in block_reductions(arr, normals, memory_mb=mem, workers=nt, progress=progress):
        row_max = res.row_max
        if own is not None:
            mine = own[0][res.rows][:, None] == own[1][res.cols][None, :]
            row_max = np.where(mine[:, None, :], np.float32(-np.inf), row_max)
        best[res.rows] = np.maximum(best[res.rows], row_max.max(axis=2))
    return sims_to_dists(best)


def _check_groups(groups: object, n: int, r: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(bag_groups, bank_groups)`` as int64 arrays of lengths ``n`` and ``r``; every image has a row outside its group."""
    if groups is None:
        return None
    if not isinstance(groups, tuple) or len(groups) != 2:
        raise ValueError("groups must be a pair (bag_groups, bank_groups) of integer arrays")
    bag, bank = (np.asarray(g) for g in groups)
    if bag.shape != (n,) or bank.shape != (r,) or not all(np.issubdtype(g.dtype, np.integer) for g in (bag, bank)):
        raise ValueError(f"groups must be integer arrays of shapes ({n},) and ({r},); "
                         f"got {bag.shape} {bag.dtype} and {bank.shape} {bank.dtype}")
    if (bank == bank[0]).all() and (bag == bank[0]).any():
        raise ValueError("groups leave an image no bank row outside its own group; the bank needs a second group")
    return bag.astype(np.int64), bank.astype(np.int64)

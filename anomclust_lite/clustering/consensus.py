"""Consensus clustering: one tree from many partitions (evidence accumulation).

Ward's merges are greedy, so a small change of the patch weights can move an
early merge and with it a whole cluster: on MTD, 1 % noise on the patch
scores moves one clustering's NMI between 0.26 and 0.43. Combining the
partitions of neighbouring settings (Fred and Jain's evidence accumulation)
keeps what they agree on; on the shared data it raised NMI on average
(BENCHMARKS.md "Consensus Ward"), though a single run is not less sensitive
to such noise:

- the *co-association* of two images is the fraction of the partitions that
  put them in one cluster (:func:`co_association`);
- the consensus is a Ward tree on ``1 - co_association``
  (:func:`consensus_linkage`); pairs the partitions cannot tell apart (equal
  co-association) are ordered by a tie-break distance far below one step of
  co-association, so that the tree is meaningful at every K, not only at the
  K the partitions were cut at.

:func:`consensus_ward` is the estimator's ensemble: the Ward trees of the
same images' WA embeddings at the temperatures :func:`consensus_temperatures`
(``tau x`` :data:`~anomclust_lite.core.defaults.CONSENSUS_TAU_FACTORS`), each cut at
``K .. K +`` :data:`~anomclust_lite.core.defaults.CONSENSUS_EXTRA_K`
(:func:`nested_cuts`), ties broken by the distances of the first embedding.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .auto_k import cut_linkage
from .dispatch import linkage_matrix
from ..core.defaults import CONSENSUS_EXTRA_K, CONSENSUS_TAU_FACTORS
from ..core.distances import euclidean_distances
from ..core.validation import check_finite_array, check_int
from ..core.weights import Tau, check_tau, scaled_tau

__all__ = ["co_association", "consensus_linkage", "nested_cuts", "consensus_temperatures", "consensus_ward"]

#: The tie-break distance is scaled to at most this fraction of one co-association step (1 / partitions).
_TIE_BREAK = 0.5


def _check_partitions(partitions: Sequence[np.ndarray]) -> List[np.ndarray]:
    parts = [np.asarray(p) for p in partitions]
    if not parts:
        raise ValueError("partitions must hold at least one labelling")
    n = parts[0].shape
    for i, p in enumerate(parts):
        if p.ndim != 1 or p.shape != n or p.size < 2 or not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"partitions[{i}] must be one integer label per image, as partitions[0] "
                             f"(at least 2 images); got shape {p.shape}, dtype {p.dtype}")
    return parts


def co_association(partitions: Sequence[np.ndarray]) -> np.ndarray:
    """Fraction of the ``partitions`` that put each pair of images in one cluster.

    Parameters
    ----------
    partitions : sequence of (N,) int arrays
        Labellings of the same ``N`` images (any label values).

    Returns
    -------
    (N, N) float64
        Symmetric, in ``[0, 1]``, ones on the diagonal.

    Examples
    --------
    >>> co_association([np.array([0, 0, 1]), np.array([0, 1, 1])]).tolist()
    [[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]]
    """
    parts = _check_partitions(partitions)
    n = parts[0].size
    co = np.zeros((n, n), dtype=np.float64)
    for p in parts:
        _, codes = np.unique(p, return_inverse=True)
        onehot = np.zeros((n, int(codes.max()) + 1), dtype=np.float32)
        onehot[np.arange(n), codes.reshape(-1)] = 1.0
        co += onehot @ onehot.T  # exact: sums of 0/1 products
    return co / len(parts)


def consensus_linkage(partitions: Sequence[np.ndarray], tie_break: Optional[np.ndarray] = None) -> np.ndarray:
    """Ward tree on ``1 - co_association(partitions)``.

    Parameters
    ----------
    partitions : sequence of (N,) int arrays
    tie_break : (N, N) array_like, optional
        Distances (for example Euclidean between the embeddings) that order
        the pairs of equal co-association: scaled to at most half of one
        co-association step (``0.5 / len(partitions)``) and added, so they
        never reorder two pairs the partitions tell apart.

    Returns
    -------
    (N - 1, 4) float64
        A scipy linkage matrix (Ward's update on a non-Euclidean
        dissimilarity is a heuristic, as :func:`~.dispatch.linkage_matrix` says).

    Examples
    --------
    >>> z = consensus_linkage([np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])])
    >>> cut_linkage(z, 2).tolist()
    [0, 0, 1, 1]
    """
    parts = _check_partitions(partitions)
    d = 1.0 - co_association(parts)
    if tie_break is not None:
        t = check_finite_array(tie_break, "tie_break", 2)
        if t.shape != d.shape or (t < 0).any():
            raise ValueError(f"tie_break must be non-negative distances of shape {d.shape}; got {t.shape}")
        top = float(t.max())
        if top > 0:
            d += (_TIE_BREAK / len(parts) / top) * (t + t.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return linkage_matrix(d, method="ward", metric="precomputed")


def nested_cuts(linkage: np.ndarray, k: int, extra: int) -> List[np.ndarray]:
    """The tree cut into ``k, k + 1, ..., k + extra`` clusters (no more than its ``N`` leaves).

    Examples
    --------
    >>> from scipy.cluster.hierarchy import linkage
    >>> z = linkage(np.array([[0.0], [0.1], [5.0], [5.2]]), "ward")
    >>> [c.tolist() for c in nested_cuts(z, 3, 5)]
    [[0, 0, 1, 2], [0, 1, 2, 3]]
    """
    z = check_finite_array(linkage, "linkage", 2)
    n = z.shape[0] + 1
    k = check_int(k, "k", low=1, high=n)
    extra = check_int(extra, "extra", low=0)
    return [cut_linkage(z, j) for j in range(k, min(k + extra, n) + 1)]


def consensus_temperatures(tau: Tau) -> List[Tau]:
    """The temperatures of the consensus: ``tau`` first, then ``tau`` times the other ``CONSENSUS_TAU_FACTORS``.

    Examples
    --------
    >>> consensus_temperatures("0.4x")
    ['0.4x', '0.2x', '0.3x', '0.5x', '0.6x']
    """
    t = check_tau(tau)
    return [t] + [scaled_tau(t, f) for f in CONSENSUS_TAU_FACTORS if f != 1.0]


def consensus_ward(embeddings: Sequence[np.ndarray], k: int, extra: int = CONSENSUS_EXTRA_K, *,
                   linkage: Optional[np.ndarray] = None,
                   distances: Optional[np.ndarray] = None) -> Tuple[np.ndarray, int]:
    """Consensus tree of the Ward trees of several embeddings of the same images, each cut at ``k .. k + extra``.

    Parameters
    ----------
    embeddings : sequence of (N, D) arrays
        The same ``N`` images embedded several ways (the estimator: WA
        embeddings at :func:`consensus_temperatures`); the first one's
        Euclidean distances break ties (:func:`consensus_linkage`).
    k : int
        The number of clusters wanted, ``1 <= k <= N``.
    extra : int, default ``CONSENSUS_EXTRA_K``
    linkage, distances : array_like, optional
        The first embedding's Ward tree ``(N - 1, 4)`` and Euclidean
        distances ``(N, N)`` when the caller has them already (not computed again).

    Returns
    -------
    linkage : (N - 1, 4) float64
        Cut it with :func:`~.auto_k.cut_linkage` at ``k``.
    partitions : int
        How many partitions were combined.

    Examples
    --------
    >>> x = np.array([[0.0], [0.2], [5.0], [5.1], [9.0]])
    >>> z, count = consensus_ward([x, x * [[1.0], [1.0], [1.0], [1.0], [0.7]]], 2, extra=1)
    >>> cut_linkage(z, 2).tolist(), count
    ([0, 0, 1, 1, 1], 4)
    """
    if len(embeddings) < 1:
        raise ValueError("embeddings must hold at least one (N, D) array")
    xs = [check_finite_array(e, f"embeddings[{i}]", 2) for i, e in enumerate(embeddings)]
    if any(x.shape[0] != xs[0].shape[0] for x in xs):
        raise ValueError(f"embeddings must all have the same images (rows); got {[x.shape for x in xs]}")
    n = xs[0].shape[0]
    if linkage is not None and np.shape(linkage) != (n - 1, 4) or distances is not None and np.shape(distances) != (n, n):
        raise ValueError(f"linkage and distances must be the first embedding's, shapes ({n - 1}, 4) and ({n}, {n}); "
                         f"got {np.shape(linkage)} and {np.shape(distances)}")
    trees = [linkage if linkage is not None else linkage_matrix(xs[0], method="ward")]
    trees += [linkage_matrix(x, method="ward") for x in xs[1:]]
    parts = [cut for tree in trees for cut in nested_cuts(tree, k, extra)]
    tie_break = distances if distances is not None else euclidean_distances(xs[0])
    return consensus_linkage(parts, tie_break=tie_break), len(parts)

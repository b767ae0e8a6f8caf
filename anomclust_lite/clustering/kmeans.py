"""Lloyd's k-means with greedy k-means++ seeding, in float64, best of several restarts.

Private module: :func:`anomclust_lite.clustering.dispatch.cluster` validates its inputs and
calls :func:`kmeans`; the helpers here trust theirs.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple, Optional

import numpy as np
from scipy.spatial.distance import cdist

__all__ = ["KMeansResult", "kmeans", "kmeans_plusplus", "squared_distances"]

logger = logging.getLogger(__name__)


class KMeansResult(NamedTuple):
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    labels : np.ndarray
        ``(N,)`` int64 index of each point's centre, in ``0..k-1`` (some may be unused).
    centers : np.ndarray
        ``(k, D)`` float64 cluster centres.
    inertia : float
        Sum of squared Euclidean distances of the points to their centres.
    n_iter : int
        Lloyd iterations run by the restart that won.
    """

    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    n_iter: int


def squared_distances(x: np.ndarray, centers: np.ndarray, x_sq: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared Euclidean distances between rows, via ``|x|² − 2 x·c + |c|²``.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` float64 points.
    centers : np.ndarray
        ``(k, D)`` float64 centres.
    x_sq : np.ndarray, optional
        ``(N,)`` precomputed ``|x|²``.

    Returns
    -------
    np.ndarray
        ``(N, k)`` float64, tiny negatives from cancellation clamped to 0.

    Examples
    --------
    >>> import numpy as np
    >>> squared_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]]))
    array([[ 0.],
           [25.]])
    """
    if x_sq is None:
        x_sq = np.einsum("nd,nd->n", x, x)
    c_sq = np.einsum("kd,kd->k", centers, centers)
    d2 = x @ centers.T
    d2 *= -2.0
    d2 += x_sq[:, None]
    d2 += c_sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` initial centres with greedy k-means++.

    The first centre is a uniformly drawn point.  Each next centre is the best (lowest
    resulting potential) of ``2 + floor(log k)`` candidates drawn with probability
    proportional to the squared distance to the nearest centre chosen so far.  When
    every point coincides with a chosen centre (potential 0, e.g. duplicate points)
    the next centre is drawn uniformly.  Distances are computed from differences, so
    identical points are exactly 0 apart.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` float64 points.
    k : int
        Number of centres, ``1 <= k <= N``.
    rng : np.random.Generator
        Source of all randomness.

    Returns
    -------
    np.ndarray
        ``(k,)`` int64 row indices of the chosen centres (may repeat only when points
        coincide).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> idx = kmeans_plusplus(x, 2, np.random.default_rng(0))
    >>> sorted((x[idx, 0] > 5).tolist())
    [False, True]
    """
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    closest = cdist(x, x[chosen[:1]], "sqeuclidean")[:, 0]
    for c in range(1, k):
        cumulative = np.cumsum(closest)
        potential = cumulative[-1]
        if potential > 0.0:
            draws = rng.random(n_trials) * potential
            # A draw rounded up to the potential must not land on a zero-weight tail point.
            last_positive = np.flatnonzero(closest > 0.0)[-1]
            candidates = np.minimum(np.searchsorted(cumulative, draws, side="right"), last_positive)
        else:
            candidates = rng.integers(n, size=1)
        to_candidates = cdist(x, x[candidates], "sqeuclidean")
        np.minimum(to_candidates, closest[:, None], out=to_candidates)
        best = int(np.argmin(to_candidates.sum(axis=0)))
        chosen[c] = candidates[best]
        closest = to_candidates[:, best]
    return chosen


def _update_centers(
    x: np.ndarray, labels: np.ndarray, dist_to_own: np.ndarray, centers: np.ndarray
) -> np.ndarray:
    """Means of the clusters; an empty cluster moves to a far-away point.

    Empty clusters take the points farthest from their current centre (largest first),
    but only points at a positive distance: moving a centre onto a point that already
    sits on its centre would not lower the inertia, so with duplicate points a cluster
    may stay empty and the caller reports fewer than ``k`` clusters.
    """
    k, n = centers.shape[0], x.shape[0]
    one_hot = np.zeros((k, n))
    one_hot[labels, np.arange(n)] = 1.0
    counts = one_hot.sum(axis=1)
    new_centers = centers.copy()
    filled = counts > 0
    new_centers[filled] = (one_hot[filled] @ x) / counts[filled, None]
    empty = np.flatnonzero(~filled)
    if empty.size:
        far = np.argsort(-dist_to_own, kind="stable")[: empty.size]
        far = far[dist_to_own[far] > 0.0]
        new_centers[empty[: far.size]] = x[far]
    return new_centers


def _lloyd(
    x: np.ndarray, x_sq: np.ndarray, centers: np.ndarray, max_iter: int
) -> "tuple[np.ndarray, np.ndarray, int, bool]":
    """Lloyd iterations until the assignment stops changing (exact fixed point)."""
    n = x.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    for it in range(max_iter):
        d2 = squared_distances(x, centers, x_sq)
        new_labels = np.argmin(d2, axis=1)
        if np.array_equal(new_labels, labels):
            return centers, labels, it, True
        labels = new_labels
        centers = _update_centers(x, labels, d2[np.arange(n), labels], centers)
    labels = np.argmin(squared_distances(x, centers, x_sq), axis=1)
    return centers, labels, max_iter, False


def kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, *, n_init: int = 10, max_iter: int = 300
) -> KMeansResult:
    """Best of ``n_init`` k-means runs (k-means++ seeding, Lloyd iterations).

    Each run iterates until the assignment of points to centres no longer changes
    (a fixed point of Lloyd's algorithm) or ``max_iter`` is reached.  The run with the
    lowest inertia wins (the first one on ties).

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` float64 points.
    k : int
        Number of clusters, ``1 <= k <= N``.
    rng : np.random.Generator
        Source of all randomness (consumed in order: runs are reproducible).
    n_init : int
        Number of restarts.
    max_iter : int
        Lloyd iterations per restart.

    Returns
    -------
    KMeansResult

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 10.0]])
    >>> res = kmeans(x, 2, np.random.default_rng(0))
    >>> res.inertia
    1.0
    >>> bool(res.labels[0] == res.labels[1] != res.labels[2] == res.labels[3])
    True
    """
    x_sq = np.einsum("nd,nd->n", x, x)
    runs = []
    for run in range(n_init):
        init = x[kmeans_plusplus(x, k, rng)]
        centers, labels, n_iter, converged = _lloyd(x, x_sq, init, max_iter)
        if not converged:
            logger.warning("k-means restart %d did not converge in %d iterations", run, max_iter)
        diff = x - centers[labels]
        inertia = float(np.einsum("nd,nd->", diff, diff))
        logger.debug("k-means restart %d: %d iterations, inertia %.6g", run, n_iter, inertia)
        runs.append(KMeansResult(labels.astype(np.int64), centers, inertia, n_iter))
    return min(runs, key=lambda r: r.inertia)  # first of the best on ties

"""k-medoids by PAM (Kaufman & Rousseeuw): greedy BUILD, then best-improvement SWAP.

Private module: :func:`anomclust_lite.clustering.dispatch.cluster` validates its inputs and
calls :func:`pam`; the helpers here trust theirs.

PAM is deterministic (no random draws): ties go to the lowest index.  Each SWAP
round evaluates every (medoid, non-medoid) exchange at once.  For a candidate ``h``
replacing medoid ``i``, with ``d1``/``d2`` the distances of point ``j`` to its nearest
and second-nearest medoid and ``C_i`` the points whose nearest medoid is ``i``, the
change of the total cost is::

    Σ_j [min(d1_j, d_jh) − d1_j]  +  Σ_{j ∈ C_i} [min(d2_j, d_jh) − min(d1_j, d_jh)]

computed in column blocks so that memory stays ``O(N · block)``.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

__all__ = ["KMedoidsResult", "pam"]

logger = logging.getLogger(__name__)

#: Elements per temporary ``(N, block)`` array in BUILD and SWAP.
_BLOCK_ELEMENTS = 1 << 22
#: A swap must lower the cost by more than this fraction of the largest distance.
_SWAP_RTOL = 1e-12


class KMedoidsResult(NamedTuple):
    """Outcome of :func:`pam`.

    Attributes
    ----------
    labels : np.ndarray
        ``(N,)`` int64 position (in ``medoids``) of each point's nearest medoid.
    medoids : np.ndarray
        ``(k,)`` int64 row indices of the medoids.
    cost : float
        Sum of the distances of the points to their nearest medoid.
    n_swaps : int
        Number of SWAP steps applied.
    """

    labels: np.ndarray
    medoids: np.ndarray
    cost: float
    n_swaps: int


def _block_size(n: int) -> int:
    """Columns per block so that an ``(n, block)`` temporary has ~``_BLOCK_ELEMENTS`` entries."""
    return max(1, _BLOCK_ELEMENTS // max(1, n))


def _build(dist: np.ndarray, k: int) -> np.ndarray:
    """Greedy BUILD: start from the most central point, add the largest-gain point."""
    n = dist.shape[0]
    step = _block_size(n)
    medoids = [int(np.argmin(dist.sum(axis=0)))]
    is_medoid = np.zeros(n, dtype=bool)
    is_medoid[medoids[0]] = True
    nearest = dist[:, medoids[0]].copy()
    for _ in range(1, k):
        gain = np.empty(n)
        for start in range(0, n, step):
            block = dist[:, start : start + step]
            gain[start : start + step] = np.maximum(nearest[:, None] - block, 0.0).sum(axis=0)
        gain[is_medoid] = -np.inf
        new = int(np.argmax(gain))
        medoids.append(new)
        is_medoid[new] = True
        np.minimum(nearest, dist[:, new], out=nearest)
    return np.asarray(medoids, dtype=np.int64)


def _nearest_two(dist: np.ndarray, medoids: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Position of the nearest medoid, distance to it and to the second nearest."""
    to_medoids = dist[:, medoids]
    order = np.argsort(to_medoids, axis=1, kind="stable")
    rows = np.arange(dist.shape[0])
    first = order[:, 0]
    d1 = to_medoids[rows, first]
    d2 = to_medoids[rows, order[:, 1]] if medoids.size > 1 else np.full(dist.shape[0], np.inf)
    return first, d1, d2


def pam(dist: np.ndarray, k: int, *, max_swaps: int = 10_000) -> KMedoidsResult:
    """Partition around medoids on a distance matrix.

    Parameters
    ----------
    dist : np.ndarray
        ``(N, N)`` symmetric non-negative float64 distances, zero diagonal.
    k : int
        Number of medoids, ``1 <= k <= N``.
    max_swaps : int
        Safety cap on SWAP steps (each strictly lowers the cost, so PAM terminates long
        before this in practice).

    Returns
    -------
    KMedoidsResult
        A local optimum: no single exchange of a medoid with a non-medoid lowers the cost.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    >>> res = pam(cdist(x, x), 2)
    >>> sorted(res.medoids.tolist()), res.cost
    ([1, 3], 3.0)
    """
    n = dist.shape[0]
    step = _block_size(n)
    medoids = _build(dist, k)
    is_medoid = np.zeros(n, dtype=bool)
    is_medoid[medoids] = True
    threshold = _SWAP_RTOL * float(dist.max())
    n_swaps = 0
    while True:
        nearest, d1, d2 = _nearest_two(dist, medoids)
        one_hot = np.zeros((k, n))
        one_hot[nearest, np.arange(n)] = 1.0
        best_delta, best_pos, best_h = 0.0, -1, -1
        for start in range(0, n, step):
            block = dist[:, start : start + step]
            with_h = np.minimum(d1[:, None], block)
            removal = one_hot @ (np.minimum(d2[:, None], block) - with_h)  # (k, block)
            delta = (with_h - d1[:, None]).sum(axis=0)[None, :] + removal
            delta[:, is_medoid[start : start + step]] = np.inf
            flat = int(np.argmin(delta))
            pos, col = divmod(flat, delta.shape[1])
            if delta[pos, col] < best_delta:
                best_delta, best_pos, best_h = float(delta[pos, col]), pos, start + col
        if best_delta >= -threshold or n_swaps == max_swaps:
            if n_swaps == max_swaps:
                logger.warning("PAM stopped after max_swaps=%d swaps", max_swaps)
            break
        is_medoid[medoids[best_pos]] = False
        is_medoid[best_h] = True
        medoids[best_pos] = best_h
        n_swaps += 1
        logger.debug("PAM swap %d: cost change %.6g", n_swaps, best_delta)
    return KMedoidsResult(nearest.astype(np.int64), medoids, float(d1.sum()), n_swaps)

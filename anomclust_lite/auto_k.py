"""Automatic choice of the number of clusters K by the silhouette.

Method
------
For every candidate ``K`` in ``2 .. min(k_max, N - 1)`` the images are
partitioned into ``K`` clusters (for hierarchical methods by cutting one
linkage tree, so the candidates are nested and cost nothing extra; otherwise
by re-running the clustering), and the partition is scored with the mean
**silhouette** computed on the same distance matrix the clustering used:

``s(i) = (b(i) - a(i)) / max(a(i), b(i))``, where ``a(i)`` is the mean
distance of image ``i`` to the other members of its cluster and ``b(i)`` the
smallest mean distance to the members of another cluster (``s(i) = 0`` for a
singleton). The ``K`` with the highest mean silhouette wins; ties go to the
smaller ``K``.

The silhouette cannot score ``K = 1``, so it always proposes at least two
clusters. Degenerate sizes are explicit: with ``N <= 3`` images there are fewer
than two candidates to compare and the choice is ``K = 1`` (method
``"too-few-images"``); when all distances are zero the images are identical
and the choice is ``K = 1`` (method ``"identical-images"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from ._validation import check_finite_array, check_int

__all__ = ["DEFAULT_K_MAX", "KChoice", "choose_k", "cut_linkage", "silhouette_score", "silhouette_samples"]

#: Largest K tried by :func:`choose_k` unless told otherwise.
DEFAULT_K_MAX = 15


@dataclass(frozen=True)
class KChoice:
    """The chosen number of clusters and how it was chosen.

    Attributes
    ----------
    k : int
        The number of clusters.
    method : str
        ``"fixed"`` (given by the user), ``"silhouette"``, ``"too-few-images"``
        or ``"identical-images"``.
    scores : dict of int to float
        Mean silhouette per candidate K (empty unless ``method == "silhouette"``).
    """

    k: int
    method: str
    scores: Dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"k": ..., "method": ..., "scores": {"2": ..., ...}}``."""
        return {"k": self.k, "method": self.method, "scores": {str(k): float(v) for k, v in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "KChoice":
        """Inverse of :meth:`to_dict`."""
        return cls(int(data["k"]), str(data["method"]), {int(k): float(v) for k, v in data["scores"].items()})


def _check_distances(distances: object) -> np.ndarray:
    d = check_finite_array(distances, "distances", 2)
    if d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (N, N) matrix; got shape {d.shape}")
    if d.size and (d.min() < 0 or not np.allclose(d, d.T, rtol=1e-5, atol=1e-8)):
        raise ValueError("distances must be symmetric and non-negative")
    return d


def silhouette_samples(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Silhouette ``s(i)`` of every image for a precomputed distance matrix.

    Parameters
    ----------
    distances : (N, N) array_like
        Symmetric, non-negative distances with a zero diagonal.
    labels : (N,) array_like of int
        Cluster of every image; needs ``2 <= n_clusters <= N - 1``.

    Returns
    -------
    (N,) float64
        Values in ``[-1, 1]``; 0 for members of singleton clusters.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 0.1, 5.0, 5.1])
    >>> d = np.abs(x[:, None] - x[None, :])
    >>> np.round(silhouette_samples(d, [0, 0, 1, 1]), 3)
    array([0.98, 0.98, 0.98, 0.98])
    """
    d = _check_distances(distances)
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != d.shape[0]:
        raise ValueError(f"labels must be a 1-D array of length N={d.shape[0]}; got shape {lab.shape}")
    _, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    n, k = d.shape[0], counts.shape[0]
    if not 2 <= k <= n - 1:
        raise ValueError(f"labels must form between 2 and N-1={n - 1} clusters for a silhouette; got {k}")
    onehot = np.zeros((n, k))
    onehot[np.arange(n), inv] = 1.0
    sums = d @ onehot  # (N, K): total distance of each image to each cluster
    own = counts[inv]
    a = np.divide(sums[np.arange(n), inv], own - 1, out=np.zeros(n), where=own > 1)
    means = sums / counts[None, :]
    means[np.arange(n), inv] = np.inf
    b = means.min(axis=1)
    denom = np.maximum(a, b)
    s = np.divide(b - a, denom, out=np.zeros(n), where=denom > 0)
    s[own == 1] = 0.0
    return s


def silhouette_score(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette over all images (see :func:`silhouette_samples`).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 0.1, 5.0, 5.1])
    >>> d = np.abs(x[:, None] - x[None, :])
    >>> round(silhouette_score(d, [0, 0, 1, 1]), 3)
    0.98
    """
    return float(silhouette_samples(distances, labels).mean())


def cut_linkage(linkage: np.ndarray, k: int) -> np.ndarray:
    """Labels of the ``k`` clusters left after the first ``N - k`` merges of a linkage.

    Unlike ``scipy.cluster.hierarchy.fcluster(Z, k, "maxclust")`` this always
    returns exactly ``k`` clusters, also when merge heights tie.

    Parameters
    ----------
    linkage : (N - 1, 4) array_like
        A scipy linkage matrix.
    k : int
        Number of clusters, ``1 <= k <= N``.

    Returns
    -------
    (N,) int64
        Labels ``0 .. k-1`` numbered by first appearance.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> z = linkage(np.array([[0.0], [0.1], [5.0], [5.2]]), "ward")
    >>> cut_linkage(z, 2)
    array([0, 0, 1, 1])
    """
    z = check_finite_array(linkage, "linkage", 2)
    if z.shape[1] != 4:
        raise ValueError(f"linkage must be a scipy linkage matrix of shape (N-1, 4); got {z.shape}")
    n = z.shape[0] + 1
    k = check_int(k, "k", low=1, high=n)
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for step in range(n - k):
        a, b = int(z[step, 0]), int(z[step, 1])
        if not (0 <= a < n + step and 0 <= b < n + step):
            raise ValueError(f"linkage row {step} refers to cluster ids that do not exist yet; not a linkage matrix")
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = np.array([root(i) for i in range(n)])
    _, first, inv = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber clusters by first appearance
    return order[inv].astype(np.int64)


def choose_k(
    distances: np.ndarray,
    *,
    linkage: Optional[np.ndarray] = None,
    partition: Optional[Callable[[int], np.ndarray]] = None,
    k_max: int = DEFAULT_K_MAX,
) -> KChoice:
    """Choose the number of clusters by the mean silhouette.

    Parameters
    ----------
    distances : (N, N) array_like
        The distances the clustering works on (for WA embeddings, their
        Euclidean distances).
    linkage : (N - 1, 4) array_like, optional
        A linkage tree to cut at every candidate K (hierarchical methods).
    partition : callable, optional
        ``partition(k) -> (N,) labels`` for non-hierarchical methods. Give
        exactly one of ``linkage`` and ``partition``.
    k_max : int, default 15
        Largest candidate K (capped at ``N - 1``).

    Returns
    -------
    KChoice

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> from scipy.spatial.distance import cdist
    >>> x = np.repeat(np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0]]), 4, axis=0)
    >>> x = x + np.random.default_rng(0).normal(scale=0.1, size=x.shape)
    >>> choose_k(cdist(x, x), linkage=linkage(x, "ward")).k
    3
    """
    d = _check_distances(distances)
    if (linkage is None) == (partition is None):
        raise ValueError("give exactly one of linkage (hierarchical methods) and partition (other methods)")
    k_max = check_int(k_max, "k_max", low=2)
    n = d.shape[0]
    if n < 1:
        raise ValueError("distances must cover at least one image; got N=0")
    if n <= 3:
        return KChoice(1, "too-few-images")
    hi = min(k_max, n - 1)
    if float(d.max()) == 0.0:
        return KChoice(1, "identical-images")
    scores: Dict[int, float] = {}
    for k in range(2, hi + 1):
        labels = cut_linkage(linkage, k) if linkage is not None else np.asarray(partition(k))
        if not 2 <= np.unique(labels).shape[0] <= n - 1:
            continue  # a method may return fewer clusters than asked (e.g. empty k-means clusters)
        scores[k] = silhouette_score(d, labels)
    if not scores:
        return KChoice(1, "too-few-images")
    best = max(scores, key=lambda kk: (round(scores[kk], 12), -kk))
    return KChoice(best, "silhouette", scores)

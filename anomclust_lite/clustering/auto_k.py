"""Automatic choice of the number of clusters K by the L-method.

Method
------
The **L-method** (Salvador and Chan, "Determining the number of
clusters/segments in hierarchical clustering/segmentation algorithms",
ICTAI 2004) reads K off the corner of the clustering's *evaluation graph*:
the cost of each merge against the number of clusters.

1. For ``x = 1 .. X`` the images are partitioned into ``x`` clusters
   (hierarchical methods: by cutting one linkage tree; other methods: by
   re-running the clustering), and the pooled within-cluster dispersion is
   measured on the distance matrix,
   ``W_x = sum_c (1 / (2 n_c)) sum_{i, j in c} d_ij^2`` (for Euclidean
   distances, the within-cluster sum of squares). ``X = min(N - 1,
   max(2 * k_max, 21))``, enough for the refinement of step 3.
2. The evaluation graph is the **merge cost**
   ``y(x) = sqrt(2 * (W_{x-1} - W_x))`` for ``x = 2 .. X``: the cost of going
   from ``x`` to ``x - 1`` clusters. For a Ward tree this is exactly the
   Ward merge height, so the graph is the tree's own; for other methods it
   puts their partitions on the same scale.
3. Two straight lines are fitted by least squares to the points left and
   right of every possible corner ``c`` (each line at least two points), and
   the corner with the smallest size-weighted root-mean-square error
   ``c / m * RMSE(left) + (m - c) / m * RMSE(right)`` wins; the knee is the
   last point of the left line. Salvador and Chan's refinement then refits
   on the points ``x <= max(2 * knee, 21)`` (at least 20 points), so that the
   long flat tail of tiny merges does not pull the corner to the right, until
   the knee stops moving left.
4. ``K`` is the knee, capped at ``k_max``.

Rationale: merges between different defect types cost much more than merges
inside a type, and within-type merges get steadily cheaper, so the evaluation
graph falls steeply and then flattens; the corner separates the two regimes.
On the shared real data (MVTec bottle K = 4 and pill K = 7, MTD K = 6, with
unsupervised and semi-supervised WA weights and Ward) the L-method chose
5, 4, 6, 6, 5 and 4, a mean error of 1.0, against 4.3 for the largest mean
silhouette (11, 6, 3, 2, 2, 2), which keeps creeping up while a tree splits
real types into tighter sub-groups, and against 4.0 for the gap statistic,
2.7 for an eigengap, 2.8 for the largest jump of merge heights and 3.5 for
subsampling stability (``tools/auto_k_eval.py`` reproduces the comparison).

Limits: a corner needs at least two points on each side, so the L-method never
answers ``K = 2`` (two well-separated groups give ``K = 3``), and it needs at
least four points on the graph, i.e. ``N >= 6`` images. It always finds a
corner, so it does not detect data without any cluster structure. The
non-hierarchical path calls ``partition`` for ``K = 2 .. X`` (about twice
``k_max`` runs).

Degenerate sizes are explicit: with ``N <= 5`` images the choice is ``K = 1``
(method ``"too-few-images"``); when all distances are zero the images are
identical and the choice is ``K = 1`` (method ``"identical-images"``).

The silhouette (:func:`silhouette_samples`, :func:`silhouette_score`) is kept
as a quality measure of a given partition.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..core.validation import check_finite_array, check_int
from .labels import renumber_labels

__all__ = [
    "DEFAULT_K_MAX",
    "L_METHOD_MIN_POINTS",
    "KChoice",
    "choose_k",
    "cut_linkage",
    "l_method",
    "merge_costs",
    "silhouette_samples",
    "silhouette_score",
    "within_cluster_dispersion",
]

logger = logging.getLogger(__name__)

#: Largest K tried by :func:`choose_k` unless told otherwise.
DEFAULT_K_MAX = 15
#: Fewest points of the evaluation graph the L-method refits on (Salvador and Chan).
L_METHOD_MIN_POINTS = 20


@dataclass(frozen=True)
class KChoice:
    """The chosen number of clusters and how it was chosen.

    Attributes
    ----------
    k : int
        The number of clusters.
    method : str
        ``"fixed"`` (given by the user), ``"l-method"``, ``"too-few-images"``
        or ``"identical-images"``.
    scores : dict of int to float
        For ``"l-method"``: the fit error of the two lines with their corner
        at each candidate K, ``K = 3 .. min(k_max, ...)`` in the final
        refinement round (**lower is better**; the knee is the smallest).
        Empty for the other methods.
    """

    k: int
    method: str
    scores: Dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"k": ..., "method": ..., "scores": {"3": ..., ...}}``."""
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


def _check_label_vector(labels: object, n: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError(f"labels must be a 1-D array of length N={n}; got shape {lab.shape}")
    return lab


def _one_hot(labels: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """``(onehot (N, K) float64, inverse (N,), counts (K,))`` of a label vector."""
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    onehot = np.zeros((inv.shape[0], counts.shape[0]))
    onehot[np.arange(inv.shape[0]), inv] = 1.0
    return onehot, inv, counts


def silhouette_samples(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Silhouette ``s(i)`` of every image for a precomputed distance matrix.

    ``s(i) = (b(i) - a(i)) / max(a(i), b(i))``, where ``a(i)`` is the mean
    distance of image ``i`` to the other members of its cluster and ``b(i)``
    the smallest mean distance to the members of another cluster.

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
    lab = _check_label_vector(labels, d.shape[0])
    onehot, inv, counts = _one_hot(lab)
    n, k = d.shape[0], counts.shape[0]
    if not 2 <= k <= n - 1:
        raise ValueError(f"labels must form between 2 and N-1={n - 1} clusters for a silhouette; got {k}")
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


def _dispersion(squared: np.ndarray, labels: np.ndarray) -> float:
    onehot, _, counts = _one_hot(labels)
    per_cluster = np.einsum("ik,ik->k", onehot, squared @ onehot)  # sum_{i,j in c} d_ij^2
    return float((per_cluster / (2.0 * counts)).sum())


def within_cluster_dispersion(distances: np.ndarray, labels: np.ndarray) -> float:
    """Pooled within-cluster dispersion ``W = sum_c (1 / (2 n_c)) sum_{i, j in c} d_ij^2``.

    For Euclidean distances this is the within-cluster sum of squared
    distances to the cluster means (the quantity Ward's method and k-means
    minimise).

    Parameters
    ----------
    distances : (N, N) array_like
        Symmetric, non-negative distances with a zero diagonal.
    labels : (N,) array_like
        Cluster of every image (any number of clusters, any label values).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0.0, 2.0, 10.0, 12.0])
    >>> d = np.abs(x[:, None] - x[None, :])
    >>> within_cluster_dispersion(d, [0, 0, 1, 1])  # (1 + 1) + (1 + 1)
    4.0
    """
    d = _check_distances(distances)
    lab = _check_label_vector(labels, d.shape[0])
    if lab.shape[0] == 0:
        raise ValueError("distances must cover at least one image; got N=0")
    return _dispersion(d * d, lab)


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
    return renumber_labels(np.array([root(i) for i in range(n)]))




def merge_costs(dispersions: Mapping[int, float]) -> Dict[int, float]:
    """The evaluation graph ``y(x) = sqrt(2 * max(W_{x-1} - W_x, 0))`` from dispersions ``W_x``.

    Parameters
    ----------
    dispersions : mapping of int to float
        ``W_x`` for consecutive ``x = 1 .. X`` (see :func:`within_cluster_dispersion`).

    Returns
    -------
    dict of int to float
        The cost of going from ``x`` to ``x - 1`` clusters, ``x = 2 .. X``.
        For the cuts of a Ward tree on Euclidean distances these are the Ward
        merge heights. A negative difference (a method whose partitions are
        not nested, e.g. k-means) counts as 0.

    Examples
    --------
    >>> merge_costs({1: 10.0, 2: 2.0, 3: 0.5})
    {2: 4.0, 3: 1.7320508075688772}
    """
    xs = sorted(int(x) for x in dispersions)
    if not xs or xs != list(range(1, len(xs) + 1)):
        raise ValueError(f"dispersions must hold W_x for x = 1, 2, ..., X without gaps; got keys {xs}")
    w = np.array([float(dispersions[x]) for x in xs])
    if not np.isfinite(w).all() or w.min() < 0:
        raise ValueError("dispersions must be finite and non-negative")
    return {x: math.sqrt(2.0 * max(w[x - 2] - w[x - 1], 0.0)) for x in xs[1:]}


def _two_line_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Size-weighted RMSE of two least-squares lines split after point ``c``, for ``c = 2 .. m - 2``.

    Entry ``c - 2`` belongs to the left line ``x[:c]`` and the right line ``x[c:]``.
    """

    def rmse(a: np.ndarray, b: np.ndarray) -> float:
        a0, b0 = a - a.mean(), b - b.mean()
        sxx = float(a0 @ a0)
        slope = float(a0 @ b0) / sxx if sxx > 0 else 0.0
        resid = b0 - slope * a0
        return math.sqrt(float(resid @ resid) / a.shape[0])

    m = x.shape[0]
    return np.array([c / m * rmse(x[:c], y[:c]) + (m - c) / m * rmse(x[c:], y[c:]) for c in range(2, m - 1)])


def l_method(costs: Mapping[int, float], *, min_points: int = L_METHOD_MIN_POINTS) -> Tuple[int, Dict[int, float]]:
    """Knee of an evaluation graph by the L-method with Salvador and Chan's refinement.

    Parameters
    ----------
    costs : mapping of int to float
        The evaluation graph ``y(x)`` for consecutive ``x`` (e.g. the merge
        costs of :func:`merge_costs`, ``x = 2 .. X``); at least 4 points.
    min_points : int, default 20
        Fewest points a refinement round refits on.

    Returns
    -------
    knee : int
        The ``x`` of the last point of the left line in the final round.
    errors : dict of int to float
        Fit error of every candidate knee in the final round (the knee has the
        smallest; ties go to the smaller x).

    Examples
    --------
    >>> y = {x: v for x, v in zip(range(2, 12), [9.0, 8.0, 7.0, 6.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5])}
    >>> l_method(y)[0]
    5
    """
    xs = sorted(int(x) for x in costs)
    if len(xs) < 4 or xs != list(range(xs[0], xs[0] + len(xs))):
        raise ValueError(f"costs must hold at least 4 consecutive x values (two lines of two points); got keys {xs}")
    min_points = check_int(min_points, "min_points", low=4)
    x = np.array(xs, dtype=np.float64)
    y = np.array([float(costs[v]) for v in xs])
    if not np.isfinite(y).all():
        raise ValueError("costs must be finite")
    cutoff = x.shape[0]  # number of points fitted this round
    knee = xs[-1] + 1
    while True:
        last = knee
        errors = _two_line_fit(x[:cutoff], y[:cutoff])
        best = int(np.argmin(errors))  # first minimum: ties go to the smaller x
        knee = xs[best + 1]  # c = best + 2 points on the left; the last of them is x[c - 1]
        if knee >= last:
            break
        # refit on x <= max(2 * knee, first x + min_points - 1): at least min_points points
        cutoff = min(x.shape[0], max(2 * knee - xs[0] + 1, min_points))
    return knee, {xs[c - 1]: float(e) for c, e in zip(range(2, cutoff - 1), errors)}


def _tree_dispersions(squared: np.ndarray, z: np.ndarray, top: int) -> Dict[int, float]:
    """``W_x`` of the cuts of a tree into ``x = 1 .. top`` clusters, from one ``(top, top)`` block sum."""
    n = squared.shape[0]
    fine = cut_linkage(z, top)
    onehot, inv, counts = _one_hot(fine)
    blocks = onehot.T @ (squared @ onehot)  # sum of d^2 between every pair of fine clusters
    member = np.zeros(top, dtype=np.int64)
    member[inv] = np.arange(n)  # one image of every fine cluster
    out: Dict[int, float] = {}
    for x in range(1, top + 1):
        coarse = cut_linkage(z, x)[member]  # fine clusters nest inside the coarse ones
        p = np.zeros((top, x))
        p[np.arange(top), coarse] = 1.0
        sums = np.einsum("fk,fg,gk->k", p, blocks, p)
        out[x] = float((sums / (2.0 * (p.T @ counts))).sum())
    return out


def choose_k(
    distances: np.ndarray,
    *,
    linkage: Optional[np.ndarray] = None,
    partition: Optional[Callable[[int], np.ndarray]] = None,
    k_max: int = DEFAULT_K_MAX,
) -> KChoice:
    """Choose the number of clusters by the L-method on the merge-cost graph.

    Parameters
    ----------
    distances : (N, N) array_like
        The distances the clustering works on (for WA embeddings, their
        Euclidean distances).
    linkage : (N - 1, 4) array_like, optional
        A linkage tree to cut at every ``x`` (hierarchical methods).
    partition : callable, optional
        ``partition(k) -> (N,) labels`` for non-hierarchical methods, called
        for ``k = 2 .. min(N - 1, max(2 * k_max, 21))``. Give exactly one of
        ``linkage`` and ``partition``.
    k_max : int, default 15
        Largest K returned.

    Returns
    -------
    KChoice
        ``method="l-method"`` with the fit error per candidate K in
        ``scores``, or a degenerate choice (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> from scipy.spatial.distance import cdist
    >>> centres = np.array([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0], [9.0, 9.0]])
    >>> x = np.repeat(centres, 5, axis=0) + np.random.default_rng(0).normal(scale=0.3, size=(20, 2))
    >>> choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    >>> choice.k, choice.method
    (4, 'l-method')
    """
    d = _check_distances(distances)
    if (linkage is None) == (partition is None):
        raise ValueError("give exactly one of linkage (hierarchical methods) and partition (other methods)")
    k_max = check_int(k_max, "k_max", low=2)
    n = d.shape[0]
    if n < 1:
        raise ValueError("distances must cover at least one image; got N=0")
    if linkage is not None:
        z = check_finite_array(linkage, "linkage", 2)
        if z.shape != (n - 1, 4):
            raise ValueError(f"linkage must have shape (N-1, 4) = ({n - 1}, 4) for N={n} images; got {z.shape}")
    top = min(n - 1, max(2 * k_max, L_METHOD_MIN_POINTS + 1))
    if top < 5:  # fewer than 4 points x = 2 .. top on the graph
        return KChoice(1, "too-few-images")
    if float(d.max()) == 0.0:
        return KChoice(1, "identical-images")
    squared = d * d
    if linkage is not None:
        dispersions = _tree_dispersions(squared, z, top)
    else:
        dispersions = {1: _dispersion(squared, np.zeros(n, dtype=np.int64))}
        for x in range(2, top + 1):
            labels = _check_label_vector(partition(x), n)
            found = np.unique(labels).shape[0]
            if found != x:
                logger.debug("partition(%d) returned %d clusters; the graph stops at x=%d", x, found, x - 1)
                break  # a method may return fewer clusters than asked (e.g. duplicates)
            dispersions[x] = _dispersion(squared, labels)
        if len(dispersions) < 5:
            return KChoice(1, "too-few-images")
    knee, errors = l_method(merge_costs(dispersions))
    k = min(knee, k_max)
    logger.info("L-method: knee of the merge-cost graph at K=%d%s", knee, f", capped at k_max={k_max}" if knee > k else "")
    return KChoice(k, "l-method", {x: e for x, e in errors.items() if x <= k_max})

"""Clustering quality metrics against ground-truth labels.

All metrics compare a ground-truth labelling ``labels_true`` (defect type
per image) with a predicted clustering ``labels_pred``.  Labels may be any
hashable values (ints, strings, ...); only equality matters.  Everything is
computed from the contingency table ``C[i, j]`` = number of samples of
class ``i`` put in cluster ``j``, and every metric returns a Python
``float``.

Single-number metrics
    :func:`nmi`, :func:`ari`, :func:`accuracy`, :func:`f1_macro`,
    :func:`purity`, and :func:`clustering_report` for all of them at once.

Purity curves (Sohn et al., "Anomaly Clustering", WACV 2023)
    :func:`purity_curve` gives purity as a function of the number of
    clusters ``K`` (from a hierarchical linkage or from one labelling per
    ``K``); :func:`purity_auc` summarises it as the mean purity (mAUC) and
    :func:`reduction_at_purity` as the reduction ratio R@P.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Dict, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from .core.validation import check_finite_array, check_int, check_labels, check_positive_float

__all__ = [
    "contingency_matrix",
    "nmi",
    "ari",
    "accuracy",
    "f1_macro",
    "purity",
    "clustering_report",
    "purity_curve",
    "purity_auc",
    "reduction_at_purity",
]

logger = logging.getLogger(__name__)

#: Accepted forms of the ``clusterings`` argument of :func:`purity_curve`.
Clusterings = Union[np.ndarray, "Mapping[int, object]", "Sequence[object]"]


# --------------------------------------------------------------------------
# Validation and encoding
# --------------------------------------------------------------------------


def _check_label_pair(labels_true: object, labels_pred: object) -> Tuple[np.ndarray, np.ndarray]:
    """Validate two labellings: 1-D, non-empty, equal length."""
    y_true = check_labels(labels_true, "labels_true")
    y_pred = check_labels(labels_pred, "labels_pred")
    if y_true.shape[0] < 1:
        raise ValueError("labels_true must hold at least one label; got an empty array")
    if y_pred.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"labels_pred must have the same length as labels_true; got {y_pred.shape[0]} "
            f"and {y_true.shape[0]} labels. Pass one predicted label per sample"
        )
    return y_true, y_pred


def _encode(labels: np.ndarray) -> Tuple[np.ndarray, int]:
    """Map labels to codes ``0..n_unique-1``.

    Codes follow the sorted order of the labels when they can be sorted
    (as ``np.unique`` does) and the order of first appearance otherwise
    (e.g. an object array mixing ``None`` and ints).
    """
    try:
        uniques, codes = np.unique(labels, return_inverse=True)
        return codes.reshape(-1).astype(np.int64, copy=False), int(uniques.shape[0])
    except TypeError:
        index: Dict[object, int] = {}
        codes = np.fromiter(
            (index.setdefault(v, len(index)) for v in labels.tolist()), dtype=np.int64, count=labels.shape[0]
        )
        return codes, len(index)


class _Table:
    """Sparse contingency table of two encoded labellings.

    Attributes: ``rows``/``cols``/``counts`` of the non-zero cells,
    ``class_sizes`` (n_classes,), ``cluster_sizes`` (n_clusters,), ``n``.
    """

    def __init__(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        true_codes, self.n_classes = _encode(y_true)
        pred_codes, self.n_clusters = _encode(y_pred)
        self.n = int(true_codes.shape[0])
        cells, counts = np.unique(true_codes * self.n_clusters + pred_codes, return_counts=True)
        self.rows = cells // self.n_clusters
        self.cols = cells % self.n_clusters
        self.counts = counts.astype(np.int64, copy=False)
        self.class_sizes = np.bincount(true_codes, minlength=self.n_classes).astype(np.int64)
        self.cluster_sizes = np.bincount(pred_codes, minlength=self.n_clusters).astype(np.int64)

    def dense(self) -> np.ndarray:
        """Dense ``(n_classes, n_clusters)`` int64 table."""
        table = np.zeros((self.n_classes, self.n_clusters), dtype=np.int64)
        table[self.rows, self.cols] = self.counts
        return table

    def same_partition(self) -> bool:
        """True when both labellings are equal up to renaming the labels."""
        return self.counts.shape[0] == self.n_classes == self.n_clusters


def _table(labels_true: object, labels_pred: object) -> _Table:
    y_true, y_pred = _check_label_pair(labels_true, labels_pred)
    return _Table(y_true, y_pred)


# --------------------------------------------------------------------------
# Metric kernels on a validated table
# --------------------------------------------------------------------------


def _entropy(sizes: np.ndarray, n: int) -> float:
    """Shannon entropy (nats) of a partition with the given block sizes."""
    s = sizes[sizes > 0].astype(np.float64)
    h = math.log(n) - float(np.sum(s * np.log(s))) / n
    return max(h, 0.0)


def _nmi(t: _Table) -> float:
    if t.n_classes == t.n_clusters == 1 or t.same_partition():
        return 1.0
    if t.n_classes == 1 or t.n_clusters == 1:
        # One side has zero entropy, the other not: no shared information.
        return 0.0
    n = float(t.n)
    nij = t.counts.astype(np.float64)
    a = t.class_sizes[t.rows].astype(np.float64)
    b = t.cluster_sizes[t.cols].astype(np.float64)
    mi = float(np.sum(nij * (np.log(nij) + math.log(n) - np.log(a) - np.log(b)))) / n
    if mi <= 0.0:
        return 0.0
    normaliser = 0.5 * (_entropy(t.class_sizes, t.n) + _entropy(t.cluster_sizes, t.n))
    return float(min(max(mi / normaliser, 0.0), 1.0))


def _pairs(sizes: np.ndarray) -> int:
    """Number of unordered pairs inside blocks, as an exact Python int.

    Each term and the sum fit in int64 for fewer than ~4e9 samples; the
    products in :func:`_ari` are then done with Python ints.
    """
    return int(np.sum(sizes * (sizes - 1) // 2))


def _ari(t: _Table) -> float:
    together_both = _pairs(t.counts)
    together_true = _pairs(t.class_sizes)
    together_pred = _pairs(t.cluster_sizes)
    total = t.n * (t.n - 1) // 2
    # ARI = (index - expected) / (max - expected) with expected = a*b/total and
    # max = (a+b)/2, multiplied through by 2*total to stay in exact integers.
    numerator = 2 * (total * together_both - together_true * together_pred)
    denominator = total * (together_true + together_pred) - 2 * together_true * together_pred
    if denominator == 0:
        # Only when both labellings are one cluster, both are all singletons,
        # or N == 1: the two partitions agree perfectly.
        return 1.0
    return float(numerator / denominator)


def _purity(t: _Table) -> float:
    majority = np.zeros(t.n_clusters, dtype=np.int64)
    np.maximum.at(majority, t.cols, t.counts)
    return float(int(majority.sum()) / t.n)


def _matching(t: _Table) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one class↔cluster matching maximising correctly assigned samples.

    Among matchings with the same (maximal) number of correct samples, the
    one with the largest sum of per-class F1 is returned: the F1 term is
    scaled so that its total stays below 1/2 and cannot outweigh a single
    sample.  Returns ``(class_idx, cluster_idx, table)``.
    """
    table = t.dense()
    f1 = 2.0 * table / (t.class_sizes[:, None] + t.cluster_sizes[None, :]).astype(np.float64)
    weight = table + f1 / (2.0 * min(t.n_classes, t.n_clusters) + 1.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return rows, cols, table


def _accuracy(rows: np.ndarray, cols: np.ndarray, table: np.ndarray, n: int) -> float:
    return float(int(table[rows, cols].sum()) / n)


def _f1_macro(t: _Table, rows: np.ndarray, cols: np.ndarray, table: np.ndarray) -> float:
    matched = table[rows, cols].astype(np.float64)
    f1 = 2.0 * matched / (t.class_sizes[rows] + t.cluster_sizes[cols]).astype(np.float64)
    # Classes left without a cluster contribute F1 = 0 to the mean.
    return float(np.sum(f1) / t.n_classes)


# --------------------------------------------------------------------------
# Public single-number metrics
# --------------------------------------------------------------------------


def contingency_matrix(labels_true: object, labels_pred: object) -> np.ndarray:
    """Count samples per (true class, predicted cluster) pair.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    numpy.ndarray, shape (n_classes, n_clusters), int64
        ``C[i, j]`` = number of samples of class ``i`` in cluster ``j``.
        Rows and columns follow the sorted unique labels (order of first
        appearance when the labels cannot be sorted).

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Notes
    -----
    Memory is ``O(n_classes * n_clusters)``.

    Examples
    --------
    >>> contingency_matrix(["a", "a", "b"], [1, 0, 0])
    array([[1, 1],
           [1, 0]])
    """
    return _table(labels_true, labels_pred).dense()


def nmi(labels_true: object, labels_pred: object) -> float:
    """Normalized mutual information with arithmetic-mean normalisation.

    ``NMI = I(T; P) / ((H(T) + H(P)) / 2)`` (natural logs; the base cancels),
    the scikit-learn default.  Symmetric in its arguments.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    float
        In ``[0, 1]``.  Degenerate cases: both labellings a single cluster,
        or identical up to renaming (e.g. both all singletons) give exactly
        ``1.0``; one side a single cluster and the other not gives ``0.0``.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Examples
    --------
    >>> nmi([0, 0, 1, 1], ["x", "x", "y", "y"])
    1.0
    >>> nmi([0, 0, 1, 1], [0, 1, 0, 1])
    0.0
    """
    return _nmi(_table(labels_true, labels_pred))


def ari(labels_true: object, labels_pred: object) -> float:
    """Adjusted Rand index (Hubert & Arabie).

    Pair counts are combined with exact Python integers, so there is no
    overflow for large ``N``.  Symmetric in its arguments.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    float
        At most ``1.0`` (about 0 for random labellings, can be negative).
        When the index is undefined (0/0) — both labellings a single
        cluster, both all singletons, or ``N == 1`` — the partitions agree
        and ``1.0`` is returned.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Examples
    --------
    >>> ari([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> round(ari([0, 0, 1, 1], [0, 0, 1, 2]), 4)
    0.5714
    """
    return _ari(_table(labels_true, labels_pred))


def accuracy(labels_true: object, labels_pred: object) -> float:
    """Clustering accuracy after the best one-to-one class↔cluster matching.

    The matching maximises the number of samples whose cluster is matched
    to their class (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``
    on the contingency table).  The number of clusters may differ from the
    number of classes: samples of unmatched clusters count as wrong.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    float
        Fraction of correctly assigned samples, in ``[0, 1]``.  Equals the
        micro-averaged F1 when every unmatched cluster is given a new label
        of its own.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Notes
    -----
    Memory is ``O(n_classes * n_clusters)`` (dense table).

    Examples
    --------
    >>> accuracy([0, 0, 1, 1, 2], [5, 5, 7, 7, 7])
    0.8
    """
    t = _table(labels_true, labels_pred)
    rows, cols, table = _matching(t)
    return _accuracy(rows, cols, table, t.n)


def f1_macro(labels_true: object, labels_pred: object) -> float:
    """Macro-averaged F1 over true classes after Hungarian matching.

    Uses the matching of :func:`accuracy`.  When several matchings reach
    the same accuracy, the one with the largest macro-F1 is used, so the
    result does not depend on label names or solver tie-breaking.  Class
    ``i`` matched to cluster ``j`` has
    ``F1 = 2 C[i, j] / (|class i| + |cluster j|)``; a class left without a
    cluster (more classes than clusters) has ``F1 = 0``.  The mean is over
    all true classes.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Examples
    --------
    >>> round(f1_macro([0, 0, 1, 1, 2], [5, 5, 7, 7, 7]), 4)
    0.6
    """
    t = _table(labels_true, labels_pred)
    rows, cols, table = _matching(t)
    return _f1_macro(t, rows, cols, table)


def purity(labels_true: object, labels_pred: object) -> float:
    """Purity: each cluster counts the size of its majority class.

    ``purity = sum_j max_i C[i, j] / N``.  Not symmetric: it rewards many
    small clusters (all singletons give 1.0).

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    float
        In ``(0, 1]``.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Examples
    --------
    >>> purity([0, 0, 1, 1, 1], [0, 0, 0, 1, 1])
    0.8
    """
    return _purity(_table(labels_true, labels_pred))


def clustering_report(labels_true: object, labels_pred: object) -> Dict[str, float]:
    """All single-number metrics at once (one contingency table).

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    dict of str to float
        Keys ``"nmi"``, ``"ari"``, ``"accuracy"``, ``"f1_macro"``,
        ``"purity"`` (in that order), values as from the functions of the
        same names.

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Examples
    --------
    >>> clustering_report([0, 0, 1, 1], [1, 1, 0, 0])
    {'nmi': 1.0, 'ari': 1.0, 'accuracy': 1.0, 'f1_macro': 1.0, 'purity': 1.0}
    """
    t = _table(labels_true, labels_pred)
    rows, cols, table = _matching(t)
    return {
        "nmi": _nmi(t),
        "ari": _ari(t),
        "accuracy": _accuracy(rows, cols, table, t.n),
        "f1_macro": _f1_macro(t, rows, cols, table),
        "purity": _purity(t),
    }


# --------------------------------------------------------------------------
# Purity curves
# --------------------------------------------------------------------------


def _check_linkage(z: object, n: int) -> np.ndarray:
    """Validate a scipy linkage matrix for ``n`` samples; return child ids (n-1, 2)."""
    arr = check_finite_array(z, "clusterings", 2)
    if arr.shape != (n - 1, 4):
        raise ValueError(
            f"clusterings given as an array must be a scipy linkage matrix of shape "
            f"(N - 1, 4) = ({n - 1}, 4) for N = len(labels_true) = {n}; got shape {arr.shape}. "
            f"Pass one labelling per K as a list or dict instead"
        )
    children = arr[:, :2]
    if np.any(children != np.floor(children)) or np.any(children < 0):
        raise ValueError("clusterings (linkage matrix) must hold non-negative integer cluster ids in columns 0-1")
    ids = children.astype(np.int64)
    newest = n + np.arange(n - 1, dtype=np.int64)[:, None]
    if np.any(ids >= newest):
        raise ValueError(
            "clusterings (linkage matrix) row i may only merge ids < N + i (clusters formed by earlier rows)"
        )
    if np.unique(ids).shape[0] != ids.size:
        raise ValueError("clusterings (linkage matrix) merges some cluster id more than once")
    sizes = np.ones(2 * n - 1, dtype=np.int64)
    for i, (a, b) in enumerate(ids.tolist()):
        sizes[n + i] = sizes[a] + sizes[b]
    if n > 1 and not np.array_equal(arr[:, 3], sizes[n:].astype(np.float64)):
        raise ValueError(
            "clusterings (linkage matrix) column 3 must hold the size of each merged cluster; "
            "build it with scipy.cluster.hierarchy.linkage"
        )
    return ids


def _linkage_purity(codes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Purity after every merge of a linkage, indexed by ``K - 1``.

    Each live cluster keeps a dict class -> count and its majority count;
    merges fold the smaller dict into the larger (O(N log N) updates).
    """
    n = codes.shape[0]
    purities = np.empty(n, dtype=np.float64)
    purities[n - 1] = 1.0
    counts: Dict[int, Dict[int, int]] = {}
    majority = np.ones(2 * n - 1, dtype=np.int64).tolist()
    total = n  # sum of majority counts over live clusters
    leaf_codes = codes.tolist()
    for step, (a, b) in enumerate(ids.tolist()):
        ca = counts.pop(a) if a >= n else {leaf_codes[a]: 1}
        cb = counts.pop(b) if b >= n else {leaf_codes[b]: 1}
        if len(ca) < len(cb):
            ca, cb = cb, ca
        best = max(majority[a], majority[b])
        for cls, c in cb.items():
            merged = ca.get(cls, 0) + c
            ca[cls] = merged
            if merged > best:
                best = merged
        node = n + step
        counts[node] = ca
        majority[node] = best
        total += best - majority[a] - majority[b]
        purities[n - 2 - step] = total / n
    return purities


def purity_curve(labels_true: object, clusterings: Clusterings) -> Tuple[np.ndarray, np.ndarray]:
    """Purity as a function of the number of clusters ``K``.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    clusterings : numpy.ndarray, Mapping or Sequence
        One of

        * a **numpy array**: always read as a scipy linkage matrix ``Z`` of
          shape ``(N - 1, 4)`` (``scipy.cluster.hierarchy.linkage``).  The
          curve has every ``K = 1..N``; the clustering for ``K`` is the
          state after the first ``N - K`` merges (rows) of ``Z``, so it has
          exactly ``K`` clusters.  For a monotone linkage without tied
          merge heights this equals ``fcluster(Z, K, criterion="maxclust")``;
          with ties ``maxclust`` can return fewer than ``K`` clusters, this
          function cannot.
        * a **Mapping** ``{K: labels_pred}``: ``K`` is taken from the key
          (an int in ``1..N``) and the labelling may use at most ``K``
          distinct labels (fewer is allowed, e.g. empty k-means clusters).
        * any other **Sequence** (list, tuple) of labellings: ``K`` of each
          is its number of distinct labels; two labellings with the same
          ``K`` are an error.  Pass a 2-D array of labellings as ``list(arr)``.

    Returns
    -------
    ks : numpy.ndarray, shape (n_points,), int64
        Strictly increasing numbers of clusters.
    purities : numpy.ndarray, shape (n_points,), float64
        :func:`purity` of the clustering with ``ks[i]`` clusters.  For a
        linkage the curve is non-decreasing, starts at the largest class
        fraction (``K = 1``) and ends at 1.0 (``K = N``).

    Raises
    ------
    ValueError
        If ``labels_true`` is invalid, a linkage matrix is malformed or has
        the wrong shape, a labelling has the wrong length, a key is not an
        int in ``1..N`` or is exceeded by its labelling, or ``K`` repeats.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> x = np.array([[0.0], [0.1], [5.0], [5.3]])
    >>> ks, p = purity_curve([0, 0, 1, 1], linkage(x, "average"))
    >>> ks.tolist(), p.tolist()
    ([1, 2, 3, 4], [0.5, 1.0, 1.0, 1.0])
    >>> purity_curve(["a", "a", "b"], [[0, 0, 0], [0, 0, 1]])[1].tolist()
    [0.6666666666666666, 1.0]
    >>> purity_curve(["a", "a", "b"], {3: [0, 1, 2]})[0].tolist()
    [3]
    """
    y_true = check_labels(labels_true, "labels_true")
    n = y_true.shape[0]
    if n < 1:
        raise ValueError("labels_true must hold at least one label; got an empty array")

    if isinstance(clusterings, np.ndarray):
        ids = _check_linkage(clusterings, n)
        codes, n_classes = _encode(y_true)
        logger.debug("purity curve from a linkage: N=%d, %d classes", n, n_classes)
        return np.arange(1, n + 1, dtype=np.int64), _linkage_purity(codes, ids)

    if isinstance(clusterings, Mapping):
        items = list(clusterings.items())
        from_keys = True
    elif isinstance(clusterings, Sequence) and not isinstance(clusterings, (str, bytes)):
        items = [(None, labels) for labels in clusterings]
        from_keys = False
    else:
        raise ValueError(
            "clusterings must be a linkage matrix (numpy array), a dict {K: labels} or a list of "
            f"labellings; got {type(clusterings).__name__}"
        )
    if not items:
        raise ValueError("clusterings must hold at least one labelling; got an empty collection")

    points: Dict[int, float] = {}
    for position, (key, labels) in enumerate(items):
        where = f"clusterings[{key!r}]" if from_keys else f"clusterings[{position}]"
        y_pred = check_labels(labels, where)
        if y_pred.shape[0] != n:
            raise ValueError(
                f"{where} must have one label per sample ({n} = len(labels_true)); got {y_pred.shape[0]}"
            )
        table = _Table(y_true, y_pred)
        if from_keys:
            k = check_int(key, "clusterings key (K)", low=1, high=n)
            if table.n_clusters > k:
                raise ValueError(
                    f"{where} uses {table.n_clusters} distinct labels, more than its key K={k}; "
                    "the key must be the number of clusters"
                )
        else:
            k = table.n_clusters
            if k in points:
                raise ValueError(
                    f"clusterings holds two labellings with K={k} clusters (the second at position "
                    f"{position}); keep one labelling per K"
                )
        points[k] = _purity(table)
    ks = np.array(sorted(points), dtype=np.int64)
    return ks, np.array([points[k] for k in ks.tolist()], dtype=np.float64)


def _check_curve(ks: object, purities: object) -> Tuple[np.ndarray, np.ndarray]:
    """Validate a purity curve: strictly increasing int K >= 1, purities in [0, 1]."""
    k = np.asarray(ks)
    if k.ndim != 1:
        raise ValueError(f"ks must be a 1-D array of cluster counts; got shape {k.shape}")
    if k.shape[0] and not np.issubdtype(k.dtype, np.integer):
        raise ValueError(f"ks must hold integers (numbers of clusters); got dtype {k.dtype}")
    k = k.astype(np.int64)
    if k.shape[0] and k.min() < 1:
        raise ValueError(f"ks must be >= 1; got minimum {int(k.min())}")
    if np.any(np.diff(k) <= 0):
        raise ValueError("ks must be strictly increasing; sort the curve by K and drop duplicates")
    p = check_finite_array(purities, "purities", 1)
    if p.shape[0] != k.shape[0]:
        raise ValueError(f"purities must have one value per K; got {p.shape[0]} values for {k.shape[0]} ks")
    if p.shape[0] and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("purities must lie in [0, 1]")
    return k, p


def purity_auc(ks: object, purities: object) -> float:
    """Mean purity over the normalised cluster-count axis (the paper's mAUC).

    With ``x = K / N`` the curve is integrated with the trapezoid rule from
    the smallest to the largest ``x`` and divided by that x-range:

    ``mAUC = ∫ purity dx / (x_max - x_min)
    = sum_i (K[i+1] - K[i]) (p[i] + p[i+1]) / 2 / (K[-1] - K[0])``

    ``N`` cancels, so it is not needed.  For the full curve ``K = 1..N``
    of :func:`purity_curve` this is the area under purity over
    ``x ∈ [1/N, 1]`` rescaled to a unit-width axis, i.e. the mean purity.

    Parameters
    ----------
    ks : array_like of int, shape (n_points,)
        Strictly increasing numbers of clusters (>= 1), at least two.
    purities : array_like of float, shape (n_points,)
        Purity at each ``K``, in ``[0, 1]``.

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``ks`` is not strictly increasing integers >= 1 or holds fewer
        than two points, or ``purities`` does not match it.

    Examples
    --------
    >>> purity_auc([1, 2, 3, 4], [0.5, 0.75, 1.0, 1.0])
    0.8333333333333334
    """
    k, p = _check_curve(ks, purities)
    if k.shape[0] < 2:
        raise ValueError(f"ks must hold at least two points to define an area; got {k.shape[0]}")
    width = np.diff(k).astype(np.float64)
    area = float(np.sum(width * (p[1:] + p[:-1]))) / 2.0
    return area / float(k[-1] - k[0])


def reduction_at_purity(ks: object, purities: object, p: float, *, n_samples: int) -> float:
    """Reduction ratio at purity ``p`` (the paper's R@P).

    ``R@P = 1 - K_min / N`` where ``K_min`` is the smallest ``K`` in the
    curve with ``purity >= p`` (exact float comparison) and ``N`` is
    ``n_samples``: the fraction of labelling work saved when a human labels
    one representative per cluster instead of every image, at the coarsest
    clustering that still reaches purity ``p``.  The curve need not be
    monotone.  Since purity is 1.0 at ``K = N``, a full curve from
    :func:`purity_curve` always defines it.

    Parameters
    ----------
    ks : array_like of int, shape (n_points,)
        Strictly increasing numbers of clusters (>= 1).
    purities : array_like of float, shape (n_points,)
        Purity at each ``K``, in ``[0, 1]``.
    p : float
        Target purity in ``(0, 1]``.
    n_samples : int
        Number of samples ``N`` the curve was computed on; ``>= max(ks)``.

    Returns
    -------
    float
        In ``[0, 1 - 1/N]``.

    Raises
    ------
    ValueError
        If the curve is invalid or empty, ``p`` is outside ``(0, 1]``,
        ``n_samples < max(ks)``, or no point of the curve reaches ``p``.

    Examples
    --------
    >>> reduction_at_purity([1, 2, 3, 4], [0.5, 0.75, 1.0, 1.0], 0.75, n_samples=4)
    0.5
    >>> reduction_at_purity([1, 2, 3, 4], [0.5, 0.75, 1.0, 1.0], 0.9, n_samples=4)
    0.25
    """
    k, pur = _check_curve(ks, purities)
    if k.shape[0] < 1:
        raise ValueError("ks must hold at least one point; got an empty curve")
    target = check_positive_float(p, "p")
    if target > 1.0:
        raise ValueError(f"p must be a purity in (0, 1]; got {p!r}")
    n = check_int(n_samples, "n_samples", low=int(k[-1]))
    reached = np.flatnonzero(pur >= target)
    if reached.shape[0] == 0:
        raise ValueError(
            f"p={target} is not reached by the curve (max purity {float(pur.max())}); "
            "extend the curve up to K = n_samples, where purity is 1"
        )
    return 1.0 - int(k[reached[0]]) / n

"""Single-number clustering metrics, each a function of one contingency table.

:func:`nmi`, :func:`ari`, :func:`accuracy`, :func:`f1_macro`, :func:`purity`,
and :func:`clustering_report` for all of them from one table.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .contingency import ContingencyTable, contingency_table

__all__ = ["nmi", "ari", "accuracy", "f1_macro", "purity", "clustering_report", "table_purity"]


def _entropy(sizes: np.ndarray, n: int) -> float:
    """Shannon entropy (nats) of a partition with the given block sizes."""
    s = sizes[sizes > 0].astype(np.float64)
    h = math.log(n) - float(np.sum(s * np.log(s))) / n
    return max(h, 0.0)


def _nmi(t: ContingencyTable) -> float:
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


def _ari(t: ContingencyTable) -> float:
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


def table_purity(t: ContingencyTable) -> float:
    majority = np.zeros(t.n_clusters, dtype=np.int64)
    np.maximum.at(majority, t.cols, t.counts)
    return float(int(majority.sum()) / t.n)


def _matching(t: ContingencyTable) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _f1_macro(t: ContingencyTable, rows: np.ndarray, cols: np.ndarray, table: np.ndarray) -> float:
    matched = table[rows, cols].astype(np.float64)
    f1 = 2.0 * matched / (t.class_sizes[rows] + t.cluster_sizes[cols]).astype(np.float64)
    # Classes left without a cluster contribute F1 = 0 to the mean.
    return float(np.sum(f1) / t.n_classes)




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
    return _nmi(contingency_table(labels_true, labels_pred))


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
    return _ari(contingency_table(labels_true, labels_pred))


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
    t = contingency_table(labels_true, labels_pred)
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
    t = contingency_table(labels_true, labels_pred)
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
    return table_purity(contingency_table(labels_true, labels_pred))


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
    t = contingency_table(labels_true, labels_pred)
    rows, cols, table = _matching(t)
    return {
        "nmi": _nmi(t),
        "ari": _ari(t),
        "accuracy": _accuracy(rows, cols, table, t.n),
        "f1_macro": _f1_macro(t, rows, cols, table),
        "purity": table_purity(t),
    }



"""Purity curves (Sohn et al., "Anomaly Clustering", WACV 2023).

:func:`purity_curve` gives purity as a function of the number of clusters
``K`` (from a hierarchical linkage or from one labelling per ``K``);
:func:`purity_auc` summarises it as the mean purity (mAUC) and
:func:`reduction_at_purity` as the reduction ratio R@P.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Dict, Tuple, Union

import numpy as np

from ..core.validation import check_finite_array, check_int, check_labels, check_positive_float
from .contingency import ContingencyTable, encode_labels
from .supervised import table_purity

__all__ = ["Clusterings", "purity_curve", "purity_auc", "reduction_at_purity"]

logger = logging.getLogger(__name__)

#: Accepted forms of the ``clusterings`` argument of :func:`purity_curve`.
Clusterings = Union[np.ndarray, "Mapping[int, object]", "Sequence[object]"]


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
        codes, n_classes = encode_labels(y_true)
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
        table = ContingencyTable(y_true, y_pred)
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
        points[k] = table_purity(table)
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

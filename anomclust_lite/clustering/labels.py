"""Canonical cluster ids: the one place where flat labels are renumbered.

Clusterings return arbitrary ids; the package shows ``0 .. K-1`` in a fixed
order so that results are reproducible and comparable: by first appearance
(:func:`anomclust_lite.cluster`, :func:`anomclust_lite.clustering.auto_k.cut_linkage`)
or by cluster size (the fitted estimator: cluster 0 is the largest).
"""

from __future__ import annotations

import numpy as np

from ..core.validation import check_choice, check_labels

__all__ = ["RENUMBER_ORDERS", "renumber_labels"]

#: How :func:`renumber_labels` orders the clusters.
RENUMBER_ORDERS = ("appearance", "size")


def renumber_labels(labels: np.ndarray, *, by: str = "appearance") -> np.ndarray:
    """Map cluster ids to ``0 .. K-1`` in a canonical order.

    Parameters
    ----------
    labels : (N,) array_like
        Cluster ids (any values compared by equality).
    by : {"appearance", "size"}
        ``"appearance"``: in order of each cluster's first image;
        ``"size"``: largest cluster first, ties by the first image.

    Returns
    -------
    (N,) int64

    Examples
    --------
    >>> renumber_labels([7, 7, 3, 5, 3, 3]).tolist()
    [0, 0, 1, 2, 1, 1]
    >>> renumber_labels([7, 7, 3, 5, 3, 3], by="size").tolist()
    [1, 1, 0, 2, 0, 0]
    """
    arr = check_labels(labels, "labels")
    check_choice(by, "by", RENUMBER_ORDERS)
    ids, first, inv, counts = np.unique(arr, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first) if by == "appearance" else np.lexsort((first, -counts))  # new id -> old position
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size)
    return rank[inv.reshape(-1)]

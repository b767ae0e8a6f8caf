"""How far to trust a clustering: per-image confidence, per-cluster cohesion, a run-level verdict.

Confidence of an image is its *centre margin*: with ``a`` the distance of its
embedding to its own cluster's centre and ``b`` the distance to the nearest
other centre,

    confidence = clip((b - a) / max(a, b), 0, 1)

the silhouette formula (Rousseeuw 1987) with cluster centres in place of the
mean distances to the members. 1: the image sits on its own centre, far from
any other; 0: it is as near (or nearer) another cluster's centre - a border
case. A cluster's cohesion is the mean confidence of its members, and a
clustering is *weak* when the mean confidence of all images is below
:data:`WEAK_MEAN_CONFIDENCE` (see BENCHMARKS.md for how it was chosen).
"""

from __future__ import annotations

import numpy as np

from .distances import squared_distances_to
from .validation import check_cluster_ids, check_clustered, check_finite_array

__all__ = ["WEAK_MEAN_CONFIDENCE", "centre_margins", "cluster_cohesion", "is_weak"]

#: Mean confidence below which a clustering is reported as weak.
WEAK_MEAN_CONFIDENCE = 0.2


def centre_margins(embeddings: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Confidence of every image: its centre margin ``(b - a) / max(a, b)`` clipped to [0, 1].

    Parameters
    ----------
    embeddings : (N, D) array_like
        Image embeddings.
    centers : (K, D) array_like
        Cluster centres.
    labels : (N,) int array_like
        Cluster of every image (``0..K-1``); need not be its nearest centre.

    Returns
    -------
    (N,) float64 in [0, 1]
        1 for every image when ``K == 1`` (there is no other cluster).

    Examples
    --------
    >>> emb = [[0.0], [0.4], [1.0]]
    >>> centre_margins(emb, [[0.0], [1.0]], [0, 0, 1]).round(2)
    array([1.  , 0.33, 1.  ])
    """
    x, c, lab = check_clustered(embeddings, centers, labels)
    if c.shape[0] == 1:
        return np.ones(x.shape[0])
    d = np.sqrt(squared_distances_to(x, c))
    rows = np.arange(x.shape[0])
    own = d[rows, lab]
    d[rows, lab] = np.inf
    other = d.min(axis=1)
    scale = np.maximum(own, other)
    margin = np.divide(other - own, scale, out=np.zeros_like(own), where=scale > 0)
    return np.clip(margin, 0.0, 1.0)


def cluster_cohesion(confidence: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean confidence of every cluster's members; NaN for an empty cluster.

    Examples
    --------
    >>> cluster_cohesion([1.0, 0.5, 0.2], [0, 0, 1], 3)
    array([0.75, 0.2 ,  nan])
    """
    conf = check_finite_array(confidence, "confidence", 1)
    lab = check_cluster_ids(labels, conf.size, k)
    sums = np.bincount(lab, weights=conf, minlength=k)
    counts = np.bincount(lab, minlength=k)
    return np.divide(sums, counts, out=np.full(k, np.nan), where=counts > 0)


def is_weak(confidence: np.ndarray, threshold: float = WEAK_MEAN_CONFIDENCE) -> bool:
    """True when the mean confidence of the images is below ``threshold``.

    Examples
    --------
    >>> is_weak([0.1, 0.2, 0.1]), is_weak([0.9, 0.4])
    (True, False)
    """
    conf = check_finite_array(confidence, "confidence", 1)
    if conf.size == 0:
        raise ValueError("confidence must hold at least one image")
    return bool(conf.mean() < threshold)

"""What the page shows at every K, computed once when the report is written.

For a hierarchical run the tree is cut at every K from ``k_min`` to ``k_max``
(N integers per K). Cluster ids at each K follow the fitted clusters, so
colours stay put while the slider moves: the clusters of a cut are numbered by
the smallest fitted cluster among their members, then by size (larger first),
then by their first image. At the fitted K the cut is the fitted clustering.

Per K the page also gets every image's distance to its cluster centre (as the
fit measures it: Euclidean to the mean WA embedding when the embeddings are
given, else the distance to the cluster's medoid) and each cluster's
representative (its medoid: least total distance to the other members).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..clustering.auto_k import DEFAULT_K_MAX, cut_linkage
from ..clustering.dispatch import mds_embedding
from .data import ReportRun

__all__ = ["N_NEIGHBOURS", "k_range", "cuts", "cut_view", "neighbours", "map_coordinates", "rounded"]

#: Nearest neighbours listed in the zoom view.
N_NEIGHBOURS = 6


def rounded(values: Sequence[float], digits: int = 4) -> List[Optional[float]]:
    """``values`` to ``digits`` significant digits for the page; NaN and inf become None.

    Examples
    --------
    >>> rounded([1.234567, float("nan")])
    [1.235, None]
    """
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in map(float, values)]


def k_range(run: ReportRun) -> Tuple[int, int]:
    """Smallest and largest K the page offers (both the fitted K without a linkage)."""
    n = sum(1 for it in run.images if it.cluster >= 0)
    if run.linkage is None or n < 2:
        return run.k, run.k
    top = run.k_max if run.k_max is not None else max(run.k, DEFAULT_K_MAX)
    return min(2, run.k), max(run.k, min(top, n))


def _follow_fitted(raw: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Renumber the clusters of ``raw`` by (smallest fitted id among members, -size, first index)."""
    ids = np.unique(raw)
    keys = []
    for c in ids:
        members = np.flatnonzero(raw == c)
        keys.append((int(fitted[members].min()), -members.size, int(members[0]), int(c)))
    order = {key[3]: new for new, key in enumerate(sorted(keys))}
    return np.array([order[int(c)] for c in raw], dtype=np.int64)


def cuts(run: ReportRun) -> Dict[int, np.ndarray]:
    """Cluster of every image at every offered K (-1: in no cluster)."""
    fitted = np.array([it.cluster for it in run.images], dtype=np.int64)
    k_min, k_max = k_range(run)
    inside = np.flatnonzero(fitted >= 0)
    out: Dict[int, np.ndarray] = {}
    for k in range(k_min, k_max + 1):
        if k == run.k:
            out[k] = fitted
            continue
        labels = np.full(fitted.shape, -1, dtype=np.int64)
        labels[inside] = _follow_fitted(cut_linkage(run.linkage, k), fitted[inside])
        out[k] = labels
    return out


def _medoids(labels: np.ndarray, k: int, dist: np.ndarray) -> np.ndarray:
    reps = np.full(k, -1, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size:
            reps[c] = members[np.argmin(dist[np.ix_(members, members)].sum(axis=1))]
    return reps


def _centre_distances(labels: np.ndarray, k: int, emb: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape, np.nan)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size:
            out[members] = np.linalg.norm(emb[members] - emb[members].mean(axis=0), axis=1)
    return out


def cut_view(run: ReportRun, k: int, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distance to the centre and representatives (-1: unknown) of the clusters at ``k``."""
    if k == run.k:
        dist = np.array([it.distance for it in run.images], dtype=np.float64)
        reps = np.asarray(run.representatives if run.representatives is not None else np.full(k, -1))
        if run.representatives is None and run.distances is not None:
            reps = _medoids(labels, k, np.asarray(run.distances, dtype=np.float64))
        return dist, reps.astype(np.int64)
    d = None if run.distances is None else np.asarray(run.distances, dtype=np.float64)
    reps = _medoids(labels, k, d) if d is not None else np.full(k, -1, dtype=np.int64)
    if run.embeddings is not None:
        dist = _centre_distances(labels, k, np.asarray(run.embeddings, dtype=np.float64))
    elif d is not None:
        dist = np.where(labels >= 0, d[np.arange(labels.size), reps[np.maximum(labels, 0)]], np.nan)
    else:
        dist = np.full(labels.shape, np.nan)
    return dist, reps


def neighbours(dist: np.ndarray, count: int = N_NEIGHBOURS) -> np.ndarray:
    """Indices of each image's ``count`` nearest other images, nearest first (ties: lower index)."""
    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    count = min(count, n - 1)
    if count <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    masked = d + np.diag(np.full(n, np.inf))
    return np.argsort(masked, axis=1, kind="stable")[:, :count]


def _principal_axes(emb: np.ndarray) -> np.ndarray:
    """The first two principal components of ``emb`` (signs fixed: largest coordinate positive).

    Classical MDS of Euclidean distances is this projection, found from the
    (N, D) embeddings instead of an eigendecomposition of the (N, N) Gram matrix.
    """
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    xy = u[:, :2] * s[:2]
    signs = np.sign(xy[np.argmax(np.abs(xy), axis=0), np.arange(xy.shape[1])])
    return xy * np.where(signs == 0, 1.0, signs)


def map_coordinates(dist: np.ndarray, embeddings: Optional[np.ndarray] = None) -> np.ndarray:
    """2-D map of the images in the unit square, centred, aspect kept, ``(N, 2)``.

    Classical MDS of ``dist``; when the distances are Euclidean between
    ``embeddings`` the same map comes from their principal components (much
    faster for thousands of images).

    Examples
    --------
    >>> from scipy.spatial.distance import cdist
    >>> x = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    >>> xy = map_coordinates(cdist(x, x))
    >>> float(np.ptp(xy, axis=0).max()), bool(np.allclose(xy.min(axis=0) + xy.max(axis=0), 1.0))
    (1.0, True)
    >>> bool(np.allclose(np.abs(map_coordinates(cdist(x, x), x) - 0.5), np.abs(xy - 0.5)))  # up to reflections
    True
    """
    emb = mds_embedding(dist, n_components=2) if embeddings is None else _principal_axes(embeddings)
    if emb.shape[1] < 2:
        emb = np.hstack([emb, np.zeros((emb.shape[0], 2 - emb.shape[1]))])
    low, span = emb.min(axis=0), np.ptp(emb, axis=0)
    top = float(span.max())
    if top <= 0:
        return np.full(emb.shape, 0.5)
    return (emb - low) / top + (1.0 - span / top) / 2.0

"""Cluster centres: the mean WA embedding of each cluster, each cluster's medoid, and every image's distance.

New images are assigned to the nearest centre (mean WA embedding) whatever
distance was clustered; the distance reported for a fitted image is to its
centre for ``distance="wa"`` and to its cluster's medoid for Hausdorff
distances, which have no coordinates to average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Centres", "cluster_centres"]


@dataclass(frozen=True)
class Centres:
    """Centres of the ``K`` clusters of ``N`` fitted images.

    Attributes
    ----------
    centers : (K, D) float64
        Mean WA embedding of every cluster.
    wa_distances : (N,) float64
        Euclidean distance of every image's WA embedding to its cluster's centre.
    medoids : (K,) int64
        Index of every cluster's medoid: the member with the smallest summed
        distance to the others under the clustered distances.
    distances : (N,) float64
        Distance of every image to its centre as reported: ``wa_distances``
        for WA distances, to its medoid for Hausdorff distances.
    """

    centers: np.ndarray
    wa_distances: np.ndarray
    medoids: np.ndarray
    distances: np.ndarray


def cluster_centres(embeddings: np.ndarray, labels: np.ndarray, k: int, dist: np.ndarray, *, wa: bool) -> Centres:
    """Centres, medoids and distances of the clusters ``labels`` (ids ``0..k-1``).

    ``dist`` is the (N, N) matrix that was clustered; ``wa`` says whether it
    holds WA distances (then the reported distance is to the mean embedding).
    """
    # Each column sorted first: the centres add nothing of their own to the image-order dependence
    # (the embeddings themselves may differ by float32 rounding under another order).
    centers = np.stack([np.sort(embeddings[labels == c], axis=0).mean(axis=0) for c in range(k)])
    wa_distances = np.linalg.norm(embeddings - centers[labels], axis=1)
    medoids = np.empty(k, dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        medoids[c] = members[np.argmin(dist[np.ix_(members, members)].sum(axis=1))]
    distances = wa_distances if wa else dist[np.arange(labels.shape[0]), medoids[labels]]
    return Centres(centers, wa_distances, medoids, distances)

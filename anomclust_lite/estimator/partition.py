"""Partitioning the images: the number of clusters K (given, or by the L-method) and the labels.

With consensus Ward (:mod:`anomclust_lite.clustering.consensus`), K is chosen
on the Ward tree at ``tau`` as without it; the labels and the tree
(``Partition.linkage``, which the report cuts at other K) are then the
consensus of that tree and the trees of the other temperatures' embeddings,
each cut at ``K .. K + CONSENSUS_EXTRA_K``.

Cluster ids are canonical: cluster 0 is the largest, ties broken by the
smallest image index, so the same partition always gets the same ids.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..clustering.auto_k import KChoice, choose_k, cut_linkage
from ..clustering.consensus import consensus_ward
from ..clustering.dispatch import HIERARCHICAL_METHODS, ClusteringWarning, cluster, linkage_matrix
from .params import Params

__all__ = ["Partition", "canonical_labels", "partition_images"]


@dataclass(frozen=True)
class Partition:
    """The clustering of the fitted images.

    Attributes
    ----------
    labels : (N,) int64
        Canonical cluster ids (0 = largest cluster).
    k : int
        Number of clusters found (``labels.max() + 1``).
    choice : KChoice
        The K asked for and how it was chosen.
    linkage : (N-1, 4) float64 or None
        The linkage tree of a hierarchical method (the consensus tree when ``consensus``).
    consensus : int
        Partitions combined by consensus Ward (0: none).
    """

    labels: np.ndarray
    k: int
    choice: KChoice
    linkage: Optional[np.ndarray]
    consensus: int = 0


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by size (largest first), ties by their first image."""
    ids, first, inv, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))  # new id -> old position
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size)
    return rank[inv.reshape(-1)]


def choose_linkage(params: Params, x: np.ndarray, metric: str) -> Optional[np.ndarray]:
    """The linkage tree of a hierarchical method (``None`` for the others)."""
    return linkage_matrix(x, method=params.method, metric=metric) if params.method in HIERARCHICAL_METHODS else None


def choose_number(params: Params, x: np.ndarray, metric: str, dist: np.ndarray, z: Optional[np.ndarray]) -> KChoice:
    """K as given, or by the L-method on the merge costs of the tree ``z`` or of repeated partitions."""
    if params.k is not None:
        return KChoice(params.k, "fixed")

    def partition(k: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClusteringWarning)
            return cluster(x, k, method=params.method, metric=metric, seed=params.seed)

    if z is not None:
        return choose_k(dist, linkage=z, k_max=params.k_max)
    return choose_k(dist, partition=partition, k_max=params.k_max)


def partition_images(
    params: Params,
    embeddings: np.ndarray,
    dist: np.ndarray,
    note: Callable[[str], None],
    timings: dict,
    members: Sequence[np.ndarray] = (),
) -> Partition:
    """Cluster the images: on WA embeddings (``distance="wa"``), else on the precomputed distances.

    ``members``: the embeddings of the same images at the consensus's other
    temperatures (empty: no consensus). Calls ``note("choosing K")`` (only when K is not given) and
    ``note("clustering")`` as the stages start, and records their seconds in
    ``timings`` under ``"choosing_k"`` and ``"clustering"``.
    """
    x, metric = (embeddings, "euclidean") if params.distance == "wa" else (dist, "precomputed")
    t0 = time.perf_counter()
    z = choose_linkage(params, x, metric)
    if params.k is None:
        note("choosing K")
    choice = choose_number(params, x, metric, dist, z)
    timings["choosing_k"] = time.perf_counter() - t0

    note("clustering")
    t0 = time.perf_counter()
    parts = 0
    if members and z is not None:
        z, parts = consensus_ward([x, *members], choice.k, linkage=z, distances=dist)
    raw = cut_linkage(z, choice.k) if z is not None else cluster(x, choice.k, method=params.method, metric=metric,
                                                                 seed=params.seed)
    labels = canonical_labels(raw)
    timings["clustering"] = time.perf_counter() - t0
    return Partition(labels, int(labels.max()) + 1, choice, z, parts)

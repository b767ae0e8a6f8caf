"""Assigning new images to the clusters of a fitted model.

Every new image gets the cluster whose centre (mean WA embedding of its
fitted members) is nearest, with that distance. Its patch weights come from
anomaly scores against the reference the model stores (see
:mod:`anomclust_lite.estimator.reference`): fitting scores every image against
all other images (or all normal patches), so assignment-time scores of a new
image approximate what fitting would have given it; a larger
``reference_size`` gives a closer match.

An image whose features are identical to a fitted image's (the same file
extracted with the same settings) is recognised by a hash of its float16
features and keeps its fitted cluster and fitted distance (``fitted`` is true
for it): assigning the fitted folder again reproduces the fitted clusters,
also for the few images a hierarchical clustering put in a cluster whose
centre is not their nearest.

An image is flagged as a possible **new type** when its distance to the
nearest centre exceeds the threshold: by default the largest distance of any
fitted image to its own cluster centre (so no fitted image would be flagged).
New images are weighted against the stored reference rather than all fitted
images, so their distances scatter a little more than fitted ones; with a
small ``reference_size`` a typical image may cross the default threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..core.distances import weighted_average
from ..core.scores import cross_patch_scores, normal_scores
from ..core.validation import check_bags, check_positive_float
from .fitting import patch_weights
from .params import Params
from .reference import bag_hashes

__all__ = ["Assignment", "FittedState", "assign_bags"]


@dataclass(frozen=True)
class Assignment:
    """Result of :meth:`AnomalyClusterer.assign <anomclust_lite.estimator.clusterer.AnomalyClusterer.assign>`.

    Attributes
    ----------
    labels : (N,) int64
        Cluster of every new image.
    distances : (N,) float64
        Euclidean distance of its WA embedding to that cluster's centre.
    new_type : (N,) bool
        ``distances > threshold``: possibly a type the model has not seen.
    fitted : (N,) bool
        The image's features are identical to a fitted image's; it got that
        image's fitted cluster and distance.
    threshold : float
        The new-type threshold used.
    scores : (N, M) float32, optional
        Patch anomaly scores of every new image against the model's reference
        (the report draws them as heat maps).
    embeddings : (N, D) float64, optional
        WA embeddings of the new images (the report's map and neighbours).
    """

    labels: np.ndarray
    distances: np.ndarray
    new_type: np.ndarray
    fitted: np.ndarray
    threshold: float
    scores: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None


@dataclass(frozen=True)
class FittedState:
    """What assigning needs of a fitted model (all of it is saved in model.npz).

    Attributes
    ----------
    centers : (K, D) float64
    labels : (N,) int64
        Clusters of the fitted images.
    wa_distances : (N,) float64
        Distance of every fitted image's WA embedding to its centre.
    hashes : (N, 16) uint8
        Hashes of the fitted images' features.
    reference : (R, M, D) float16
        The bags new images are scored against.
    reference_kind : str
        ``"images"`` or ``"normal-patches"``.
    threshold : float
        Default new-type threshold.
    """

    centers: np.ndarray
    labels: np.ndarray
    wa_distances: np.ndarray
    hashes: np.ndarray
    reference: np.ndarray
    reference_kind: str
    threshold: float


def _nearest_centres(
    params: Params, state: FittedState, arr: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest centre of every new image's WA embedding, the distance to it, the patch scores, the embeddings."""
    if state.reference_kind == "images":
        scores = cross_patch_scores(arr, state.reference, aggregate=params.aggregate, q=params.q,
                                    memory_mb=params.memory_mb, n_threads=params.n_threads)
    else:
        scores = normal_scores(arr, state.reference, memory_mb=params.memory_mb, n_threads=params.n_threads)
    emb = weighted_average(arr, patch_weights(params, scores))
    d2 = ((emb[:, None, :] - state.centers[None, :, :]) ** 2).sum(axis=2)
    labels = np.argmin(d2, axis=1).astype(np.int64)
    return labels, np.sqrt(np.maximum(d2[np.arange(arr.shape[0]), labels], 0.0)), scores, emb


def assign_bags(
    params: Params, state: FittedState, bags: np.ndarray, new_type_threshold: Optional[float] = None
) -> Assignment:
    """Assign ``bags`` to the clusters of ``state``; flag distances above the threshold (validated here)."""
    arr = check_bags(bags, "bags", min_images=1, dim=state.centers.shape[1]).astype(params.bag_dtype, copy=False)
    threshold = (
        state.threshold
        if new_type_threshold is None
        else check_positive_float(new_type_threshold, "new_type_threshold")
    )
    if params.weights == "topk":
        params.topk_for(arr.shape[1])
    labels, dist, scores, emb = _nearest_centres(params, state, arr)
    lookup = {h.tobytes(): i for i, h in enumerate(state.hashes)}
    fitted = np.zeros(arr.shape[0], dtype=bool)
    for j, h in enumerate(bag_hashes(arr)):
        i = lookup.get(h.tobytes())
        if i is not None:
            fitted[j] = True
            labels[j] = state.labels[i]
            dist[j] = state.wa_distances[i]
    new_type = (dist > threshold) & ~fitted
    return Assignment(labels, dist, new_type, fitted, float(threshold), scores=scores, embeddings=emb)

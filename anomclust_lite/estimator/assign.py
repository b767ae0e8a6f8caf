"""Assigning new images to the clusters of a fitted model.

Every new image gets the cluster whose centre (mean WA embedding of its
fitted members) is nearest, with that distance (embeddings after the model's
nuisance projection, as in fitting). Its patch weights come from
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

Every new image also gets its anomaly score (against the same reference),
``is_good`` (at most the model's good-group threshold), its confidence (centre
margin) and its novelty (see :mod:`anomclust_lite.estimator.trust`). It is
flagged as a possible **new type** when its novelty exceeds its cluster's
threshold, calibrated on the fitted images at ``new_type_rate`` (or a
threshold given as ``new_type_threshold``); good images never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..core.anomaly import DEFAULT_IMAGE_TOPK, image_scores
from ..core.confidence import centre_margins
from ..core.distances import squared_distances_to, weighted_average
from ..core.novelty import flag_new_types
from ..core.projection import Projection
from ..core.scores import cross_patch_aggregates, cross_patch_scores, normal_scores
from ..core.validation import check_bags, check_positive_float
from .fitting import patch_weights
from .params import Params
from .reference import bag_hashes
from .trust import GOOD_LABEL, NoveltyState, novelty_of

__all__ = ["Assignment", "FittedState", "assign_bags"]


@dataclass(frozen=True)
class Assignment:
    """Result of :meth:`AnomalyClusterer.assign <anomclust_lite.estimator.clusterer.AnomalyClusterer.assign>`.

    Attributes
    ----------
    labels : (N,) int64
        Cluster of every new image; ``-1``: the good group (only for a model
        fitted with the good group on).
    distances : (N,) float64
        Euclidean distance of its WA embedding to the nearest centre.
    new_type : (N,) bool
        ``novelty`` above the threshold of its cluster: possibly a type the
        model has not seen. Never for images of the good group or fitted images.
    fitted : (N,) bool
        The image's features are identical to a fitted image's; it got that
        image's fitted cluster, distance, scores and flags.
    threshold : float or None
        The novelty threshold given for this call or to the model
        (``new_type_threshold``); None: the per-cluster ``thresholds``.
    anomaly_scores : (N,) float64
        Image anomaly score (higher = more likely defective).
    is_good : (N,) bool
        Anomaly score at most the model's good-group threshold (all False
        without labelled normal images).
    confidence : (N,) float64
        Centre margin in [0, 1]; NaN in the good group.
    novelty : (N,) float64
        How unlike the fitted images (about 1 for a typical fitted image).
    thresholds : (K,) float64
        Novelty threshold of every cluster.
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
    threshold: Optional[float]
    anomaly_scores: np.ndarray
    is_good: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray
    thresholds: np.ndarray
    scores: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None


@dataclass(frozen=True)
class FittedState:
    """What assigning needs of a fitted model (all of it is saved in model.npz).

    Attributes
    ----------
    centers : (K, D) float64
    labels : (N,) int64
        Clusters of the fitted images (``-1``: the good group).
    wa_distances : (N,) float64
        Distance of every fitted image's WA embedding to its centre.
    hashes : (N, 16) uint8
        Hashes of the fitted images' features.
    reference : (R, M, D) float16
        The bags new images are scored against.
    reference_kind : str
        ``"images"`` or ``"normal-patches"``.
    threshold : float or None
        Novelty threshold overriding the per-cluster ones (``new_type_threshold``).
    anomaly_scores : (N,) float64
        Fitted images' anomaly scores.
    good_threshold : float or None
        Good-group threshold (None without labelled normal images).
    good_group : bool
        Whether the good group was set apart (label -1).
    novelty : NoveltyState
    projection : Projection
        Removed from the WA embeddings of new images as from the fitted ones.
    """

    centers: np.ndarray
    labels: np.ndarray
    wa_distances: np.ndarray
    hashes: np.ndarray
    reference: np.ndarray
    reference_kind: str
    threshold: Optional[float]
    anomaly_scores: np.ndarray
    good_threshold: Optional[float]
    good_group: bool
    novelty: NoveltyState
    projection: Projection


def _score_new(params: Params, state: FittedState,
               arr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Patch scores of new images against the reference, their WA embeddings, image anomaly scores and,
    when the novelty reference is the scoring reference, the ``"min"`` scores novelty needs (one kernel pass)."""
    low = None
    if state.reference_kind != "images":
        scores = normal_scores(arr, state.reference, memory_mb=params.memory_mb, n_threads=params.n_threads)
    elif np.array_equal(state.reference, state.novelty.reference):
        scores, low = cross_patch_aggregates(arr, state.reference, (params.aggregate, "min"), q=params.q,
                                             memory_mb=params.memory_mb, n_threads=params.n_threads)
    else:
        scores = cross_patch_scores(arr, state.reference, aggregate=params.aggregate, q=params.q,
                                    memory_mb=params.memory_mb, n_threads=params.n_threads)
    emb = state.projection.apply(weighted_average(arr, patch_weights(params, scores)))
    return scores, emb, image_scores(scores, topk=DEFAULT_IMAGE_TOPK), low


def _recognise(state: FittedState, arr: np.ndarray) -> np.ndarray:
    """Index of the fitted image each new image is identical to (-1: none)."""
    lookup = {h.tobytes(): i for i, h in enumerate(state.hashes)}
    return np.array([lookup.get(h.tobytes(), -1) for h in bag_hashes(arr)], dtype=np.int64)


def assign_bags(
    params: Params, state: FittedState, bags: np.ndarray, new_type_threshold: Optional[float] = None
) -> Assignment:
    """Assign ``bags`` to the clusters of ``state``: cluster, scores, confidence, novelty, flags."""
    arr = check_bags(bags, "bags", min_images=1, dim=state.centers.shape[1]).astype(params.bag_dtype, copy=False)
    threshold = (state.threshold if new_type_threshold is None
                 else check_positive_float(new_type_threshold, "new_type_threshold"))
    if params.weights == "topk":
        params.topk_for(arr.shape[1])
    scores, emb, anomaly, low = _score_new(params, state, arr)
    d2 = squared_distances_to(emb, state.centers)
    labels = np.argmin(d2, axis=1).astype(np.int64)
    dist = np.sqrt(np.maximum(d2[np.arange(arr.shape[0]), labels], 0.0))
    novelty = novelty_of(params, state.novelty, arr, emb, low)
    same = _recognise(state, arr)
    fitted = same >= 0
    labels[fitted] = state.labels[same[fitted]]
    dist[fitted] = state.wa_distances[same[fitted]]
    anomaly[fitted] = state.anomaly_scores[same[fitted]]
    novelty[fitted] = state.novelty.fitted[same[fitted]]
    is_good = anomaly <= state.good_threshold if state.good_threshold is not None else np.zeros(arr.shape[0], bool)
    if state.good_group:
        labels[is_good & ~fitted] = GOOD_LABEL
    clustered = labels >= 0
    confidence = np.full(arr.shape[0], np.nan)
    confidence[clustered] = centre_margins(emb[clustered], state.centers, labels[clustered])
    limits = state.novelty.thresholds if threshold is None else np.full(state.centers.shape[0], threshold)
    new_type = np.zeros(arr.shape[0], dtype=bool)
    new_type[clustered] = flag_new_types(novelty[clustered], labels[clustered], limits, is_good[clustered])
    new_type &= ~fitted
    return Assignment(labels, dist, new_type, fitted, threshold, anomaly, is_good, confidence, novelty,
                      state.novelty.thresholds.copy(), scores=scores, embeddings=emb)

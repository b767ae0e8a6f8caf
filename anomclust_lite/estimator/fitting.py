"""Fitting, step by step: bags -> patch scores -> weights -> WA embeddings -> distances -> partition -> centres.

:func:`fit_bags` runs the steps of the paper (Sohn et al., WACV 2023) on
validated parameters and returns every fitted array as a :class:`Fit`; the
estimator only stores them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..core.distances import wa_distances, weighted_average
from ..core.hausdorff import hausdorff_distances
from ..core.scores import normal_scores, patch_scores
from ..core.validation import check_bags
from ..core.weights import soft_weights, topk_weights, uniform_weights
from ..core.anomaly import DEFAULT_IMAGE_TOPK, image_scores
from .centres import Centres, cluster_centres
from .params import Params
from .partition import Partition, partition_images
from .reference import bag_hashes, build_reference, normal_bank
from .trust import (
    GOOD_LABEL, NoveltyState, anomaly_against_bank, confidence_summary, fit_novelty, good_threshold,
    stratified_positions,
)

__all__ = ["Fit", "check_fit_inputs", "fit_bags", "patch_weights"]


@dataclass(frozen=True)
class Fit:
    """Everything fitting computes (see the estimator's attributes for the meaning of each)."""

    scores: np.ndarray
    weights: np.ndarray
    embeddings: np.ndarray
    distances: np.ndarray
    partition: Partition
    centres: Centres
    reference: np.ndarray
    reference_kind: str
    hashes: np.ndarray
    n_patches: int
    timings: Dict[str, float]
    anomaly_scores: np.ndarray
    good_threshold: Optional[float]
    is_good: np.ndarray
    good_group: bool
    confidence: np.ndarray
    cohesion: np.ndarray
    weak_reasons: List[str]
    novelty: NoveltyState


def check_fit_inputs(
    params: Params, bags: np.ndarray, normal_bags: Optional[np.ndarray]
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Validate the bags (and normal bags) against the parameters; return them in ``params.bag_dtype``."""
    arr = check_bags(bags, "bags", min_images=2).astype(params.bag_dtype, copy=False)
    n, m, d = arr.shape
    normals = None
    if normal_bags is not None:
        normals = check_bags(normal_bags, "normal_bags", min_images=1, dim=d).astype(params.bag_dtype, copy=False)
    if params.weights == "semi" and normals is None:
        raise ValueError("weights='semi' needs normal_bags (labelled normal images); or use weights='unsupervised'")
    if params.weights == "unsupervised" and normals is not None:
        raise ValueError("normal_bags were given but weights='unsupervised' ignores them; use weights='semi'")
    if params.k is not None and params.k > n:
        raise ValueError(f"k={params.k} is larger than the number of images N={n}; choose k <= {n}")
    if params.weights == "topk":
        params.topk_for(m)
    return arr, normals


def patch_weights(params: Params, scores: np.ndarray) -> np.ndarray:
    """Patch weights from patch scores: softmax (Eq. 5, 6), top-k or uniform."""
    n, m = scores.shape
    if params.weights in ("unsupervised", "semi"):
        return soft_weights(scores, params.effective_tau)
    if params.weights == "topk":
        return topk_weights(scores, params.topk_for(m), params.tau)
    return uniform_weights(n, m)


def _score_and_weigh(
    params: Params, arr: np.ndarray, normals: Optional[np.ndarray]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch scores (against the other images, or the normal images), weights and WA embeddings."""
    if normals is not None:
        scores = normal_scores(arr, normals, memory_mb=params.memory_mb, n_threads=params.n_threads)
    else:
        scores = patch_scores(arr, aggregate=params.aggregate, q=params.q, memory_mb=params.memory_mb,
                              n_threads=params.n_threads)
    weights = patch_weights(params, scores)
    return scores, weights, weighted_average(arr, weights)


def image_distances(params: Params, arr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, N) distances between images: Euclidean between WA embeddings, or a Hausdorff-family distance."""
    if params.distance == "wa":
        return wa_distances(arr, weights)
    return hausdorff_distances(arr, inner=params.hausdorff_inner, outer=params.hausdorff_outer,
                               memory_mb=params.memory_mb, n_threads=params.n_threads)


def _anomaly(params: Params, arr: np.ndarray, normals: Optional[np.ndarray],
             scores: np.ndarray) -> Tuple[np.ndarray, Optional[float], Optional[np.ndarray]]:
    """Image anomaly scores, the good-group threshold (None without normal images) and the normal bank."""
    if normals is None:
        return image_scores(scores, topk=DEFAULT_IMAGE_TOPK), None, None
    bank = normal_bank(normals, params.reference_size, params.seed)
    if bank.shape[0] == normals.shape[0] and normals.dtype == np.float16:
        anomaly = image_scores(scores, topk=DEFAULT_IMAGE_TOPK)  # scored against exactly this bank already
    else:
        anomaly = anomaly_against_bank(params, arr, bank)
    return anomaly, good_threshold(params, bank, params.good_rate), bank


def _clustered(params: Params, is_good: np.ndarray, on: bool) -> np.ndarray:
    """Indices of the images to cluster (all, or those outside the good group)."""
    idx = np.flatnonzero(~is_good) if on else np.arange(is_good.size)
    if idx.size < 2 or (params.k is not None and params.k > idx.size):
        raise ValueError(
            f"only {idx.size} of the {is_good.size} images are outside the good group, too few to cluster "
            f"into {params.k or 2} defect clusters; use good_group='off' (--good-group off)"
        )
    return idx


def _expand(part: Partition, cen: Centres, idx: np.ndarray, embeddings: np.ndarray) -> Tuple[Partition, Centres]:
    """Partition and centres of the clustered images ``idx`` as arrays over all images (good group: -1)."""
    n = embeddings.shape[0]
    if idx.size == n:
        return part, cen
    labels = np.full(n, GOOD_LABEL, dtype=np.int64)
    labels[idx] = part.labels
    nearest = np.sqrt(((embeddings[:, None, :] - cen.centers[None]) ** 2).sum(axis=2)).min(axis=1)
    wa = nearest.copy()
    wa[idx] = cen.wa_distances
    reported = nearest.copy()
    reported[idx] = cen.distances
    return (Partition(labels, part.k, part.choice, part.linkage),
            Centres(cen.centers, wa, idx[cen.medoids], reported))


def fit_bags(
    params: Params,
    bags: np.ndarray,
    normal_bags: Optional[np.ndarray],
    note: Callable[[str], None],
) -> Fit:
    """Run every fitting step; ``note(stage)`` is called as each stage starts."""
    arr, normals = check_fit_inputs(params, bags, normal_bags)
    timings: Dict[str, float] = {}

    note("scoring")
    t0 = time.perf_counter()
    scores, weights, embeddings = _score_and_weigh(params, arr, normals)
    anomaly, threshold, bank = _anomaly(params, arr, normals, scores)
    is_good = anomaly <= threshold if threshold is not None else np.zeros(arr.shape[0], dtype=bool)
    on = params.good_group == "auto" and threshold is not None
    idx = _clustered(params, is_good, on)
    timings["scoring"] = time.perf_counter() - t0

    note("distances")
    t0 = time.perf_counter()
    dist = image_distances(params, arr, weights)
    timings["distances"] = time.perf_counter() - t0

    sub_dist = dist if idx.size == arr.shape[0] else dist[np.ix_(idx, idx)]
    part = partition_images(params, embeddings[idx], sub_dist, note, timings)
    cen = cluster_centres(embeddings[idx], part.labels, part.k, sub_dist, wa=params.distance == "wa")
    partition, centres = _expand(part, cen, idx, embeddings)
    ref_idx = stratified_positions(partition.labels, params.reference_size, params.seed)
    reference, kind = build_reference(arr, bank, params.reference_size, ref_idx, params.seed)
    novelty = fit_novelty(params, arr, embeddings, partition.labels, partition.k, ref_idx, params.new_type_rate)
    confidence, cohesion, weak = confidence_summary(embeddings, centres.centers, partition.labels)
    return Fit(scores, weights, embeddings, dist, partition, centres, reference, kind, bag_hashes(arr),
               arr.shape[1], timings, anomaly, threshold, is_good, on, confidence, cohesion, weak, novelty)

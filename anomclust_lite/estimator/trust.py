"""Trust signals of a fitted model: image anomaly scores, the good group, confidence and novelty.

- **Anomaly score** of an image: the mean of its ``DEFAULT_IMAGE_TOPK``
  highest patch scores (:func:`anomclust_lite.core.anomaly.image_scores`);
  against the stored normal bank when labelled normal images were given,
  against the other images otherwise.
- **Good group** (only with labelled normal images): an image is likely good
  when its anomaly score is at most the threshold calibrated on the
  leave-one-out scores of the normal bank's own images at ``good_rate`` (the
  stated false-reject rate). When the normal bank is a coreset of patches,
  the anomaly score is taken against the coreset and the leave-one-out score
  of a normal image against the coreset less its own patches. With ``good_group="auto"`` such images are set
  apart (label ``-1``) and K counts the defect clusters only; with ``"off"``
  (the default, the paper's protocol) every image is clustered and
  ``is_good_`` is reported only.
- **Confidence** of an image: its centre margin
  (:mod:`anomclust_lite.core.confidence`); a cluster's cohesion is its
  members' mean confidence; a clustering is *weak* when the mean confidence is
  below ``WEAK_MEAN_CONFIDENCE`` or one cluster holds more than half of the
  clustered images and more than ``WEAK_LARGEST_SHARE`` times its fair share
  ``1/K`` (so two clusters of 60 % and 40 % are not weak; at K >= 3, half is).
- **Novelty** of an assigned image (:mod:`anomclust_lite.core.novelty`):
  nearest fitted embedding x nearest fitted patch, each relative to the
  fitted images; a *new type* when above its cluster's threshold calibrated
  at ``new_type_rate`` on the leave-one-out novelty of the fitted images that
  assigning would give the cluster (``calibration_labels``; on all of them
  for a cluster of fewer than ``MIN_OWN_CALIBRATION`` such images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from ..core.anomaly import DEFAULT_IMAGE_TOPK, calibrated_threshold, image_scores
from ..core.coreset import source_rows
from ..core.confidence import WEAK_MEAN_CONFIDENCE, centre_margins, cluster_cohesion
from ..core.novelty import calibration_labels, cluster_thresholds, nearest_distances, novelty_scores
from ..core.scores import cross_patch_scores, normal_scores, patch_scores
from .params import GOOD_GROUPS, Params

__all__ = [
    "GOOD_GROUPS", "GOOD_LABEL", "WEAK_LARGEST_SHARE", "NoveltyState", "bank_loo_scores", "coreset_loo_scores",
    "good_threshold", "anomaly_against_bank", "confidence_summary", "novelty_patch_part", "novelty_coreset_part",
    "fit_novelty",
    "novelty_of",
]

#: ``progress(done, total)`` in image pairs while a kernel runs.
Progress = Optional[Callable[[int, int], None]]

#: Label of the images set apart as the good group.
GOOD_LABEL = -1
#: A clustering is weak when its largest cluster holds more than half of the clustered images and more
#: than this many times the fair share 1/K (at K = 2: more than 75 %).
WEAK_LARGEST_SHARE = 1.5


@dataclass(frozen=True)
class NoveltyState:
    """What assigning needs to measure novelty (saved in model.npz).

    Attributes
    ----------
    embeddings : (N, D) float32
        WA embeddings of the fitted images.
    reference : (R, M', D) float16
        The patches new images are compared with: the bags of a seeded subsample of the fitted images
        (:func:`~anomclust_lite.estimator.reference.seeded_images`), or (semi-supervised models with a
        compact bank) a coreset of their patches as rows (:func:`~anomclust_lite.core.coreset.source_rows`).
    scales : (2,) float64
        Median leave-one-out embedding and patch parts among the fitted images.
    thresholds : (K,) float64
        New-type threshold of every cluster.
    fitted : (N,) float64
        Leave-one-out novelty of every fitted image.
    """

    embeddings: np.ndarray
    reference: np.ndarray
    scales: np.ndarray
    thresholds: np.ndarray
    fitted: np.ndarray


def bank_loo_scores(params: Params, bank: np.ndarray, progress: Progress = None) -> np.ndarray:
    """Leave-one-out anomaly score of each of the bank's images against the others (at least 2 images)."""
    loo = patch_scores(bank, aggregate="min", memory_mb=params.memory_mb, n_threads=params.n_threads,
                       progress=progress)
    return image_scores(loo, topk=DEFAULT_IMAGE_TOPK)


def coreset_loo_scores(params: Params, normals: np.ndarray, idx: np.ndarray, images: np.ndarray,
                       progress: Progress = None) -> np.ndarray:
    """Leave-one-out anomaly score of the normal images ``images`` against the coreset ``idx`` less their own patches.

    ``idx`` indexes the flattened ``(R * M, D)`` normal patches (patch ``j``
    comes from image ``j // M``); at least two images must own coreset patches.
    """
    rows, sources = source_rows(normals, idx)
    return scores_against_rows(params, normals[images], np.asarray(images, dtype=np.int64), rows, sources, progress)


def scores_against_rows(params: Params, bags: np.ndarray, groups: np.ndarray, rows: np.ndarray, sources: np.ndarray,
                        progress: Progress = None) -> np.ndarray:
    """Image score of each bag against coreset ``rows``, leaving out the rows whose source is the bag's group.

    ``groups[i]`` names bag ``i``'s own image among the rows' ``sources`` (-1:
    none), so that an image is never compared with its own patches.
    """
    scores = normal_scores(bags, rows, memory_mb=params.memory_mb, n_threads=params.n_threads, progress=progress,
                           groups=(groups, sources))
    return image_scores(scores, topk=DEFAULT_IMAGE_TOPK)


def good_threshold(loo_scores: Optional[np.ndarray], rate: float) -> Optional[float]:
    """Threshold calibrated on the bank's leave-one-out anomaly scores (None without them: below 2 images)."""
    return None if loo_scores is None else calibrated_threshold(loo_scores, rate)


def anomaly_against_bank(params: Params, arr: np.ndarray, bank: np.ndarray, progress: Progress = None) -> np.ndarray:
    """Anomaly score of every image against the normal bank."""
    scores = normal_scores(arr, bank, memory_mb=params.memory_mb, n_threads=params.n_threads, progress=progress)
    return image_scores(scores, topk=DEFAULT_IMAGE_TOPK)


def confidence_summary(embeddings: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Confidence of every image (NaN in the good group), cohesion of every cluster, reasons the run is weak."""
    k = centers.shape[0]
    clustered = labels >= 0
    conf = np.full(labels.shape[0], np.nan)
    conf[clustered] = centre_margins(embeddings[clustered], centers, labels[clustered])
    cohesion = cluster_cohesion(conf[clustered], labels[clustered], k)
    reasons = []
    mean = float(conf[clustered].mean())
    if mean < WEAK_MEAN_CONFIDENCE:
        reasons.append(f"mean confidence {mean:.2f} < {WEAK_MEAN_CONFIDENCE}")
    largest = np.bincount(labels[clustered], minlength=k).max() / max(int(clustered.sum()), 1)
    if k > 1 and largest > max(0.5, WEAK_LARGEST_SHARE / k):
        reasons.append(f"one cluster holds {largest:.0%} of the images")
    return conf, cohesion, reasons


def _patch_part(params: Params, arr: np.ndarray, reference: np.ndarray) -> np.ndarray:
    scores = cross_patch_scores(arr, reference, aggregate="min", memory_mb=params.memory_mb, n_threads=params.n_threads)
    return image_scores(scores, topk=DEFAULT_IMAGE_TOPK)


def novelty_patch_part(params: Params, arr: np.ndarray, ref_idx: np.ndarray, progress: Progress = None) -> np.ndarray:
    """The patch part of the fitted images' leave-one-out novelty: against the reference images ``ref_idx``."""
    if ref_idx.size < 2:
        return np.ones(arr.shape[0])
    loo = patch_scores(arr, aggregate="min", reference=ref_idx, memory_mb=params.memory_mb,
                       n_threads=params.n_threads, progress=progress)
    return image_scores(loo, topk=DEFAULT_IMAGE_TOPK)


def novelty_coreset_part(params: Params, arr: np.ndarray, ref_idx: np.ndarray, rows: np.ndarray,
                         sources: np.ndarray, progress: Progress = None) -> np.ndarray:
    """:func:`novelty_patch_part` against a coreset of the reference images' patches: ``rows`` and their
    ``sources`` (positions in ``ref_idx``) from :func:`~anomclust_lite.core.coreset.source_rows`; a reference
    image is not compared with its own patches."""
    groups = np.full(arr.shape[0], -1, dtype=np.int64)
    groups[ref_idx] = np.arange(ref_idx.size)
    return scores_against_rows(params, arr, groups, rows, sources, progress)


def fit_novelty(embeddings: np.ndarray, labels: np.ndarray, centers: np.ndarray, reference: np.ndarray, rate: float,
                patch_part: np.ndarray) -> NoveltyState:
    """Leave-one-out novelty of the fitted images and the per-cluster thresholds, each calibrated on the images
    assigning would put in the cluster (``patch_part``: see :func:`novelty_patch_part` and
    :func:`novelty_coreset_part`; ``reference``: what it was taken against)."""
    emb = embeddings.astype(np.float32)
    emb_part = nearest_distances(emb, emb, leave_one_out=True) if emb.shape[0] > 1 else np.zeros(1)
    scales = np.array([np.median(emb_part), np.median(patch_part)], dtype=np.float64)
    scales = np.where(scales > 0, scales, 1.0)
    fitted = novelty_scores(emb_part, patch_part, *scales)
    clustered = labels >= 0
    calibrates = calibration_labels(embeddings[clustered], labels[clustered], centers)
    thresholds = cluster_thresholds(fitted[clustered], calibrates, centers.shape[0], rate)
    return NoveltyState(emb, reference.astype(np.float16, copy=False), scales, thresholds, fitted)


def novelty_of(params: Params, state: NoveltyState, arr: np.ndarray, embeddings: np.ndarray,
               min_scores: Optional[np.ndarray] = None) -> np.ndarray:
    """Novelty of new images (their embeddings and bags).

    ``min_scores``: the images' ``aggregate="min"`` patch scores against the
    novelty reference when already computed (one kernel pass with the weights' scores).
    """
    emb_part = nearest_distances(embeddings.astype(np.float64), state.embeddings.astype(np.float64))
    patch_part = (_patch_part(params, arr, state.reference) if min_scores is None
                  else image_scores(min_scores, topk=DEFAULT_IMAGE_TOPK))
    return novelty_scores(emb_part, patch_part, *state.scales)


def finite_or_none(value: Optional[float]) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else float(value)

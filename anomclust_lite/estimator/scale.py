"""Fitting more images than one clustering holds: fit a seeded sample, assign the rest in chunks.

Scoring every image against every other costs ``N^2`` image pairs, Ward needs
``N^2`` memory and the bags ``N * M * D`` numbers, so above ``fit_size``
images (and unless ``exact``) :func:`fit_images`:

1. fits a seeded sample of ``fit_size`` images with :func:`~.fitting.fit_bags`
   (unsupervised scores by Eq. 7 against ``score_reference`` of them);
2. assigns every other image, :data:`CHUNK_BYTES` of bags at a time, with
   :func:`~.assign.assign_bags`, exactly as ``assign`` would after saving:
   scores against the stored reference, nearest centre, anomaly score,
   confidence and novelty;
3. merges both into one :class:`~.fitting.Fit` over all ``N`` images (no
   ``N x N`` distances and no tree: ``distances`` and the partition's
   ``linkage`` are None; ``sample`` holds the sampled positions).

Memory: the sample's bags in ``bag_dtype``, one chunk, and O(N * M) scores
and weights; ``bags`` may be a read-only memory map (``numpy.load(path,
mmap_mode="r")``), read chunk by chunk through short-lived mappings
(:func:`rows_of`), so the file is never resident as a whole. Each chunk is
validated as it is read (unit norm, finite).

:func:`assign_images` (``AnomalyClusterer.assign``) assigns any number of new
images the same way: one :data:`CHUNK_BYTES` chunk at a time
(:func:`chunked_assignments`, the loop step 2 uses), the results joined.
"""

from __future__ import annotations

import mmap
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..core.validation import check_bags
from .assign import Assignment, FittedState, assign_bags
from .centres import Centres
from ..core.memo import ArrayCache
from .fitting import Fit, Report, fit_bags, patch_weights
from .params import Params
from .partition import Partition
from .reference import bag_hashes
from .trust import NoveltyState, confidence_summary

__all__ = ["CHUNK_BYTES", "assign_images", "chunked_assignments", "fit_images", "fit_sample", "fitted_state",
           "join_assignments", "rows_of"]

#: Bags assigned at a time (in float32), beside the sample.
CHUNK_BYTES = 64 << 20


def fit_sample(n: int, size: int, seed: int) -> np.ndarray:
    """The seeded, sorted positions of the ``size`` images fitted out of ``n``."""
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def fit_images(params: Params, bags: np.ndarray, normal_bags: Optional[np.ndarray], report: Report,
               cache: Optional[ArrayCache] = None) -> Fit:
    """Fit all images at once, or (``N > fit_size`` and not ``exact``) a sample, then assign the rest."""
    n = len(bags)
    if params.exact or n <= params.fit_size:
        return fit_bags(params, bags, normal_bags, report, cache)
    if np.ndim(bags) != 3:
        raise ValueError(f"bags must be a 3-D array (images, patches, dims); got shape {np.shape(bags)}")
    sample = fit_sample(n, params.fit_size, params.seed)
    fit = fit_bags(params, rows_of(bags, sample), normal_bags, report, cache)
    report("assigning", 0, 0)
    t0 = time.perf_counter()
    state = fitted_state(params, fit)
    rest = np.setdiff1d(np.arange(n), sample)
    parts, hashes = [], []
    for chunk, part in chunked_assignments(params, state, bags, rest, report):
        parts.append(part)
        hashes.append(bag_hashes(chunk))
    timings = dict(fit.timings, assigning=time.perf_counter() - t0)
    return _merge(params, fit, sample, rest, parts, np.concatenate(hashes), timings)


def fitted_state(params: Params, fit: Fit) -> FittedState:
    """What assigning needs of ``fit`` (the estimator stores it; the rest of a sampled fit is assigned with it)."""
    return FittedState(fit.centres.centers, fit.partition.labels, fit.centres.wa_distances, fit.hashes, fit.reference,
                       fit.reference_kind, params.new_type_threshold, fit.anomaly_scores, fit.good_threshold,
                       fit.good_group, fit.novelty, fit.projection)


def chunked_assignments(params: Params, state: FittedState, bags: np.ndarray, rows: np.ndarray, report: Report,
                        new_type_threshold: Optional[float] = None) -> Iterator[Tuple[np.ndarray, Assignment]]:
    """``(chunk, assignment)`` for :data:`CHUNK_BYTES` of the bags ``rows`` at a time, each chunk validated as it
    is read; ``report("assigning", done, len(rows))`` counts images."""
    step = max(1, CHUNK_BYTES // (4 * bags.shape[1] * bags.shape[2]))
    report("assigning", 0, rows.size)
    for a in range(0, rows.size, step):
        chunk = check_bags(rows_of(bags, rows[a:a + step]), "bags", dim=bags.shape[2])
        yield chunk, assign_bags(params, state, chunk, new_type_threshold)
        report("assigning", min(rows.size, a + step), rows.size)


def assign_images(params: Params, state: FittedState, bags: np.ndarray,
                  new_type_threshold: Optional[float] = None) -> Assignment:
    """:func:`~.assign.assign_bags` for any number of images: in chunks (``bags`` may be a memory map) when
    they are more than one chunk, the results joined."""
    if np.ndim(bags) != 3 or len(bags) * 4 * int(np.prod(np.shape(bags)[1:])) <= CHUNK_BYTES:
        return assign_bags(params, state, bags, new_type_threshold)
    parts = [part for _, part in chunked_assignments(params, state, bags, np.arange(len(bags)),
                                                     lambda stage, done, total: None, new_type_threshold)]
    return join_assignments(parts)


def join_assignments(parts: List[Assignment]) -> Assignment:
    """One :class:`~.assign.Assignment` of the images of ``parts``, in order (thresholds: the first part's)."""
    def joined(field: str) -> Optional[np.ndarray]:
        values = [getattr(p, field) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    first = parts[0]
    return Assignment(joined("labels"), joined("distances"), joined("new_type"), joined("fitted"), first.threshold,
                      joined("anomaly_scores"), joined("is_good"), joined("confidence"), joined("novelty"),
                      first.thresholds, scores=joined("scores"), embeddings=joined("embeddings"))


def rows_of(bags: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """A copy of the bags ``idx``; from a memory map through a mapping of its own, released at once.

    Pages read through a mapping stay in the process's resident memory while
    it is mapped, so reading every chunk through the caller's memory map would
    grow it to the whole file; a short-lived mapping per chunk keeps it bounded.
    """
    if isinstance(bags, np.memmap) and isinstance(bags.base, mmap.mmap) and bags.filename:  # a whole mapping, no view
        out = np.empty((idx.size,) + bags.shape[1:], dtype=bags.dtype)
        step = max(1, CHUNK_BYTES // max(1, bags[0].nbytes))
        for a in range(0, idx.size, step):  # one short mapping per chunk: at most a chunk of the file resident
            mapped = np.memmap(bags.filename, dtype=bags.dtype, mode="r", offset=bags.offset, shape=bags.shape,
                               order="F" if np.isfortran(bags) else "C")
            try:
                out[a:a + step] = mapped[idx[a:a + step]]
            finally:
                del mapped
        return out
    return np.asarray(bags[idx])


def _put(n: int, sample: np.ndarray, rest: np.ndarray, fitted: np.ndarray, assigned: List[np.ndarray]) -> np.ndarray:
    """One array over all ``n`` images from the sample's rows and the assigned chunks' rows."""
    out = np.empty((n,) + fitted.shape[1:], dtype=fitted.dtype)
    out[sample] = fitted
    out[rest] = np.concatenate(assigned).astype(fitted.dtype, copy=False)
    return out


def _merge(params: Params, fit: Fit, sample: np.ndarray, rest: np.ndarray, parts: List[Assignment],
           hashes: np.ndarray, timings: Dict[str, float]) -> Fit:
    """The :class:`Fit` over all images: the sample's fitted values, the others' assigned ones."""
    n = sample.size + rest.size

    def put(fitted: np.ndarray, field: str) -> np.ndarray:
        return _put(n, sample, rest, fitted, [getattr(p, field) for p in parts])

    scores = put(fit.scores, "scores")
    weights = _put(n, sample, rest, fit.weights, [patch_weights(params, p.scores) for p in parts])
    embeddings = put(fit.embeddings, "embeddings")
    labels = put(fit.partition.labels, "labels")
    centres = Centres(fit.centres.centers, put(fit.centres.wa_distances, "distances"), sample[fit.centres.medoids],
                      put(fit.centres.distances, "distances"))
    anomaly = put(fit.anomaly_scores, "anomaly_scores")
    nov = fit.novelty
    novelty = NoveltyState(embeddings.astype(np.float32), nov.reference, nov.scales, nov.thresholds,
                           put(nov.fitted, "novelty"))
    confidence, cohesion, weak = confidence_summary(embeddings, centres.centers, labels)
    all_hashes = np.empty((n, hashes.shape[1]), dtype=np.uint8)
    all_hashes[sample], all_hashes[rest] = fit.hashes, hashes
    partition = Partition(labels, fit.partition.k, fit.partition.choice, None, fit.partition.consensus)
    return Fit(scores, weights, embeddings, None, partition, centres, fit.reference, fit.reference_kind, all_hashes,
               fit.n_patches, timings, anomaly, fit.good_threshold, put(fit.is_good, "is_good"), fit.good_group,
               confidence, cohesion, weak, novelty, fit.projection, fit.cached, sample)

"""Fitting, step by step: bags -> patch scores -> weights -> WA embeddings -> nuisance projection -> distances
-> partition (consensus Ward over neighbouring temperatures, :func:`consensus_members`) -> centres.

:func:`fit_bags` runs the steps of the paper (Sohn et al., WACV 2023; the
nuisance projection is ours, :mod:`anomclust_lite.core.projection`) on
validated parameters and returns every fitted array as a :class:`Fit`; the
estimator only stores them.

Every costly step (the patch kernel: scores, the anomaly scores against the
normal bank, the bank's leave-one-out scores, the novelty calibration; the
embeddings; Hausdorff distances) goes through the ``cache`` hook when one is
given (:mod:`anomclust_lite.core.memo`), keyed by the content of its input
arrays and the parameters it depends on; the partition, centres and trust
summaries are cheap and always recomputed. A rerun with another K, method or
clustering option therefore runs no kernel when the partition does not move
the novelty reference (see :func:`fit_bags`), and a rerun with another
``tau`` skips the scoring kernel.

``report(stage, done, total)`` is called as each stage starts (``0, 0``),
as a kernel advances (image pairs done, of ``total``), and with the stage
named ``"<stage> (from the cache)"`` when the cache served it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..clustering.consensus import consensus_temperatures
from ..core.coreset import bank_rows, coreset_count, coreset_indices, coreset_size, source_rows
from ..core.distances import average_patches, euclidean_distances, squared_distances_to
from ..core.hausdorff import hausdorff_distances
from ..core.memo import ArrayCache, content_digest, memoized, step_key
from ..core.pipeline import WeightedEmbedding, embed_bags, score_key, weigh_patches
from ..core.projection import Projection, nuisance_projection
from ..core.scores import patch_scores_and_nearest
from ..core.validation import check_bags
from ..core.weights import soft_weights
from ..core.anomaly import DEFAULT_IMAGE_TOPK, image_scores
from .centres import Centres, cluster_centres
from .params import Params
from .partition import Partition, partition_images
from .reference import bag_hashes, build_reference, normal_bank, seeded_images
from .trust import (
    GOOD_LABEL, NoveltyState, anomaly_against_bank, bank_loo_scores, confidence_summary, coreset_loo_scores,
    fit_novelty, good_threshold, novelty_coreset_part, novelty_patch_part,
)

__all__ = ["Fit", "Report", "check_fit_inputs", "consensus_members", "fit_bags", "patch_coreset", "patch_weights",
           "score_reference"]

#: ``report(stage, done, total)``: see the module docstring.
Report = Callable[[str, int, int], None]


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
    projection: Projection
    cached: Tuple[str, ...] = ()
    sample: Optional[np.ndarray] = None


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
    """Patch weights from patch scores: softmax (Eq. 5, 6), top-k or uniform (as :func:`embed_bags` makes them)."""
    k = params.topk_for(scores.shape[1]) if params.weights == "topk" else None
    return weigh_patches(scores, params.weights, params.effective_tau, k)


def patch_coreset(params: Params, bags: np.ndarray, steps: "Optional[_Steps]" = None,
                  stage: str = "choosing the normal bank's coreset") -> Optional[np.ndarray]:
    """Indices (into the flattened patches of ``bags``) of their coreset of ``bank_size`` patches; None: every patch.

    Serves the normal bank and the semi-supervised novelty reference. The indices go through the cache hook
    of ``steps`` (which reports ``stage``), keyed by the bags' content, the size and the seed.
    """
    r, m, d = bags.shape
    size = coreset_size(params.bank_size, r * m)
    if params.exact or size >= r * m:
        return None
    cache = steps.cache if steps is not None else None
    if steps is not None:
        steps.report(stage, 0, 0)
    key = step_key("coreset", bank=content_digest(bags), size=size, seed=params.seed) if cache is not None else ""
    idx, hit = memoized(cache, "trust", key, (coreset_count(r * m, size),), "float64",
                        lambda: coreset_indices(bags.reshape(r * m, d), size, seed=params.seed,
                                                n_threads=params.n_threads))
    if hit and steps is not None:
        steps.hit(stage)
    return idx.astype(np.int64)


def score_reference(params: Params, n: int) -> Optional[np.ndarray]:
    """Eq. 7: the seeded ``score_reference`` images unsupervised scores aggregate over (None: all ``n``).

    Only from ``subsample_from`` images on (and never with ``exact``).
    """
    if params.exact or n < params.subsample_from or n <= params.score_reference:
        return None
    return seeded_images(n, params.score_reference, params.seed)


class _Steps:
    """The costly steps of one fit, each looked up in the cache hook first; records which ones it served."""

    def __init__(self, params: Params, arr: np.ndarray, cache: Optional[ArrayCache], report: Report) -> None:
        self.params, self.arr, self.cache, self.report = params, arr, cache, report
        self.digest = content_digest(arr) if cache is not None else ""
        self.cached: List[str] = []
        #: ``(images, patch distances)``: each patch's nearest-patch distance to those images, when the scoring
        #: kernel computed it on the way (:meth:`embed`); the novelty calibration then compares nothing again
        self.nearest: Optional[Tuple[np.ndarray, np.ndarray]] = None

    def pairs(self, stage: str) -> Callable[[int, int], None]:
        """A kernel's ``progress(done, total)`` reported as ``stage`` (the kernel reports ``0`` first)."""
        return lambda done, total: self.report(stage, done, total)

    def hit(self, stage: str) -> None:
        self.cached.append(stage)
        self.report(f"{stage} (from the cache)", 0, 0)

    def run(self, stage: str, key: Dict[str, object], shape: Tuple[int, ...],
            compute: Callable[[Callable[[int, int], None]], np.ndarray], kind: str = "trust",
            dtype: str = "float64") -> np.ndarray:
        """``compute(progress)`` unless the cache holds the result under ``stage`` and ``key``."""
        k = step_key(stage, **key) if self.cache is not None else ""
        array, hit = memoized(self.cache, kind, k, shape, dtype, lambda: compute(self.pairs(stage)))
        if hit:
            self.hit(stage)
        return array

    def embed(self, scored_bank: Optional[np.ndarray], nearest_to: np.ndarray) -> WeightedEmbedding:
        """Patch scores (against the other images, Eq. 5/7, or the normal bank, Eq. 6), weights and WA embeddings.

        Scored against the other images, the kernel also keeps each patch's distance to the images
        ``nearest_to`` (:attr:`nearest`) when it compares them anyway (all pairs, or ``nearest_to`` within the
        Eq. 7 reference).
        """
        p = self.params
        ref = score_reference(p, self.arr.shape[0]) if scored_bank is None else None
        scores = None
        if scored_bank is None and nearest_to.size >= 2 and (ref is None or np.isin(nearest_to, ref).all()):
            scores = self._scores_and_nearest(ref, nearest_to)
        wa = embed_bags(self.arr, weights=p.weights, tau=p.tau, aggregate=p.aggregate, q=p.q, topk=p.topk,
                        normal_bags=scored_bank, reference=ref, scores=scores, memory_mb=p.memory_mb,
                        n_threads=p.n_threads, cache=self.cache, progress=self.pairs("scoring"))
        for name in wa.cached:
            self.hit(name)
        return wa

    def _scores_and_nearest(self, ref: Optional[np.ndarray], nearest_to: np.ndarray) -> np.ndarray:
        """Eq. 5/7 scores under :func:`embed_bags`'s cache key; computed, they fill :attr:`nearest` too."""
        p, n, m = self.params, self.arr.shape[0], self.arr.shape[1]

        def compute() -> np.ndarray:
            scores, nearest = patch_scores_and_nearest(
                self.arr, nearest_to, aggregate=p.aggregate, q=p.q, reference=ref, memory_mb=p.memory_mb,
                n_threads=p.n_threads, progress=self.pairs("scoring"))
            self.nearest = (nearest_to, nearest)
            return scores

        key = score_key(self.digest, None, None, ref, p.aggregate, p.q) if self.cache is not None else ""
        scores, hit = memoized(self.cache, "scores", key, (n, m), "float32", compute)
        if hit:
            self.hit("scores")
        return scores


def consensus_members(params: Params, arr: np.ndarray, scores: np.ndarray, projection: Projection) -> List[np.ndarray]:
    """Projected WA embeddings at the consensus's other temperatures (:func:`consensus_temperatures` but
    ``tau`` itself; empty when consensus Ward does not apply: :attr:`Params.consensus_applies`)."""
    if not params.consensus_applies:
        return []
    return [projection.apply(average_patches(arr, soft_weights(scores, t)))
            for t in consensus_temperatures(params.effective_tau)[1:]]


def image_distances(params: Params, steps: _Steps, embeddings: np.ndarray) -> np.ndarray:
    """(N, N) distances between images: Euclidean between WA embeddings, or a Hausdorff-family distance."""
    if params.distance == "wa":
        return euclidean_distances(embeddings)
    n = steps.arr.shape[0]
    return steps.run("hausdorff distances", {"bags": steps.digest, "inner": params.hausdorff_inner,
                                             "outer": params.hausdorff_outer}, (n, n),
                     lambda _: hausdorff_distances(steps.arr, inner=params.hausdorff_inner,
                                                   outer=params.hausdorff_outer, memory_mb=params.memory_mb,
                                                   n_threads=params.n_threads), kind="distances")


def _anomaly(params: Params, steps: _Steps, normals: Optional[np.ndarray], coreset: Optional[np.ndarray],
             scores: np.ndarray) -> Tuple[np.ndarray, Optional[float], Optional[np.ndarray]]:
    """Image anomaly scores, the good-group threshold (None without normal images) and the normal bank they
    were taken against (stored as the model's reference)."""
    arr = steps.arr
    if normals is None:
        return image_scores(scores, topk=DEFAULT_IMAGE_TOPK), None, None
    if coreset is not None:
        return _anomaly_coreset(params, steps, normals, coreset, scores)
    bank = normal_bank(normals, params.reference_size, params.seed)
    bank_digest = content_digest(bank) if steps.cache is not None else ""
    if bank.shape[0] == normals.shape[0] and normals.dtype == np.float16:
        anomaly = image_scores(scores, topk=DEFAULT_IMAGE_TOPK)  # scored against exactly this bank already
    else:
        anomaly = steps.run("scoring against the normal bank", {"bags": steps.digest, "bank": bank_digest},
                            (arr.shape[0],), lambda progress: anomaly_against_bank(params, arr, bank, progress))
    loo = None
    if bank.shape[0] >= 2:
        loo = steps.run("calibrating the good group", {"bank": bank_digest}, (bank.shape[0],),
                        lambda progress: bank_loo_scores(params, bank, progress))
    return anomaly, good_threshold(loo, params.good_rate), bank


def _anomaly_coreset(params: Params, steps: _Steps, normals: np.ndarray, coreset: np.ndarray,
                     scores: np.ndarray) -> Tuple[np.ndarray, Optional[float], np.ndarray]:
    """:func:`_anomaly` against the coreset: the scores already taken, the threshold from the leave-one-out
    scores of ``reference_size`` normal images against the coreset less their own patches."""
    anomaly = image_scores(scores, topk=DEFAULT_IMAGE_TOPK)
    images = seeded_images(normals.shape[0], params.reference_size, params.seed)
    loo = None
    if np.unique(coreset // normals.shape[1]).size >= 2:
        key = {"bank": content_digest(normals) if steps.cache is not None else "",
               "coreset": content_digest(coreset) if steps.cache is not None else "", "images": images.tolist()}
        loo = steps.run("calibrating the good group", key, (images.size,),
                        lambda progress: coreset_loo_scores(params, normals, coreset, images, progress))
    return anomaly, good_threshold(loo, params.good_rate), bank_rows(normals, coreset)


def _novelty_reference(params: Params, steps: _Steps, ref_idx: np.ndarray,
                       compact: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The novelty reference a model stores and the fitted images' leave-one-out patch part against it.

    Whole bags of the reference images ``ref_idx``; with ``compact`` (a semi-supervised fit whose normal bank
    is a coreset: the reference serves novelty only) the coreset of their patches, ``bank_size`` of them, as
    rows. The calibration's kernel (``N x reference`` pairs) has a cache entry that serves any K and method.
    """
    arr = steps.arr
    key = {"bags": steps.digest, "reference": ref_idx.tolist()}
    ref_bags = arr[ref_idx]
    idx = (patch_coreset(params, ref_bags, steps, stage="choosing the novelty reference's coreset")
           if compact and ref_idx.size >= 2 else None)
    if idx is None:
        return ref_bags.astype(np.float16), steps.run("calibrating novelty", key, (arr.shape[0],),
                                                      lambda progress: _patch_part(params, steps, ref_idx, progress))
    rows, sources = source_rows(ref_bags, idx)  # the same patches as the stored rows, grouped by image
    rows = rows.astype(np.float16).astype(arr.dtype)  # calibrated against exactly the values the model stores
    key["coreset"] = idx.tolist()
    return bank_rows(ref_bags, idx).astype(np.float16), steps.run(
        "calibrating novelty", key, (arr.shape[0],),
        lambda progress: novelty_coreset_part(params, arr, ref_idx, rows, sources, progress))


def _patch_part(params: Params, steps: _Steps, ref_idx: np.ndarray, progress: Callable[[int, int], None]) -> np.ndarray:
    """:func:`novelty_patch_part`, from the distances the scoring kernel kept when it has them (same pairs)."""
    if steps.nearest is None or not np.array_equal(steps.nearest[0], ref_idx):
        return novelty_patch_part(params, steps.arr, ref_idx, progress)
    progress(0, 0)
    return image_scores(steps.nearest[1], topk=DEFAULT_IMAGE_TOPK)


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
    nearest = np.sqrt(squared_distances_to(embeddings, cen.centers).min(axis=1))
    wa = nearest.copy()
    wa[idx] = cen.wa_distances
    reported = nearest.copy()
    reported[idx] = cen.distances
    return (Partition(labels, part.k, part.choice, part.linkage, part.consensus),
            Centres(cen.centers, wa, idx[cen.medoids], reported))


def fit_bags(
    params: Params,
    bags: np.ndarray,
    normal_bags: Optional[np.ndarray],
    report: Report,
    cache: Optional[ArrayCache] = None,
) -> Fit:
    """Run every fitting step, reporting progress and using the ``cache`` hook as the module docstring says.

    The novelty calibration compares every image with a seeded subsample of
    ``reference_size`` fitted images (semi-supervised with a compact normal
    bank: a coreset of their patches, :func:`_novelty_reference`), drawn
    independently of the clustering, so its cache entry serves any K and method.
    """
    arr, normals = check_fit_inputs(params, bags, normal_bags)
    timings: Dict[str, float] = {}
    steps = _Steps(params, arr, cache, report)

    t0 = time.perf_counter()
    coreset = patch_coreset(params, normals, steps) if normals is not None else None
    scored_bank = normals if coreset is None else bank_rows(normals, coreset)
    ref_idx = seeded_images(arr.shape[0], params.reference_size, params.seed)  # the novelty reference
    wa = steps.embed(scored_bank, ref_idx)
    projection = nuisance_projection(arr, params.projection_rank(arr.shape[2]))
    scores, weights, embeddings = wa.scores, wa.weights, projection.apply(wa.embeddings)
    anomaly, threshold, bank = _anomaly(params, steps, normals, coreset, scores)
    is_good = anomaly <= threshold if threshold is not None else np.zeros(arr.shape[0], dtype=bool)
    on = params.good_group == "auto" and threshold is not None
    idx = _clustered(params, is_good, on)
    timings["scoring"] = time.perf_counter() - t0

    report("distances", 0, 0)
    t0 = time.perf_counter()
    dist = image_distances(params, steps, embeddings)
    timings["distances"] = time.perf_counter() - t0

    sub_dist = dist if idx.size == arr.shape[0] else dist[np.ix_(idx, idx)]
    members = [m[idx] for m in consensus_members(params, arr, scores, projection)]
    part = partition_images(params, embeddings[idx], sub_dist, lambda stage: report(stage, 0, 0), timings, members)
    cen = cluster_centres(embeddings[idx], part.labels, part.k, sub_dist, wa=params.distance == "wa")
    partition, centres = _expand(part, cen, idx, embeddings)
    reference, kind = build_reference(arr, bank, ref_idx)
    t0 = time.perf_counter()
    novelty_ref, patch_part = _novelty_reference(params, steps, ref_idx, compact=coreset is not None)
    novelty = fit_novelty(embeddings, partition.labels, centres.centers, novelty_ref, params.new_type_rate, patch_part)
    timings["novelty"] = time.perf_counter() - t0
    confidence, cohesion, weak = confidence_summary(embeddings, centres.centers, partition.labels)
    return Fit(scores, weights, embeddings, dist, partition, centres, reference, kind, bag_hashes(arr),
               arr.shape[1], timings, anomaly, threshold, is_good, on, confidence, cohesion, weak, novelty,
               projection, tuple(steps.cached))

"""The method's pipeline: bags of patches -> patch scores -> weights -> WA embeddings.

:func:`embed_bags` is the one place where the steps of Sohn et al. (WACV 2023)
are wired together; the estimator, the CLI and the reproduction tools call it.

1. **Scores** (one per patch, in patch-distance units):

   - ``normal_bags`` given: distance to the nearest labelled normal patch
     (Eq. 6, :func:`~anomclust_lite.core.scores.normal_scores`);
   - ``reference_bags`` given: aggregated nearest-patch distances to a stored
     reference set (:func:`~anomclust_lite.core.scores.cross_patch_scores`,
     how a fitted model scores new images);
   - otherwise: aggregated nearest-patch distances to the other images
     (Eq. 5, or Eq. 7 over the ``reference`` subsample;
     :func:`~anomclust_lite.core.scores.patch_scores`);
   - ``scores`` given: used as they are (e.g. from the one-pass sweeps of
     :mod:`anomclust_lite.core.sweeps`), nothing is scored.

2. **Weights** (rows sum to 1): a softmax of the scores with temperature
   ``tau`` (``"unsupervised"``, ``"semi"``; Eq. 5/6), the top-k patches
   (``"topk"``; Eq. 8 uniform, Eq. 9 with ``tau``), uniform weights
   (``"uniform"``, average pooling) or ground-truth defect masks on the
   patch grid (``"mask"``, the paper's oracle baseline).

3. **Embeddings**: the weighted average of each bag's patches, whose
   Euclidean distances are the image distances (Eq. 3,
   :meth:`WeightedEmbedding.distances`).

With a ``cache`` hook (:mod:`anomclust_lite.core.memo`), the scores are
looked up by the content of the bags (and normal or reference bags) and the
parameters they depend on (``aggregate``, ``q``, ``reference``), and the
embeddings by the scores' key, the weight mode, ``tau`` and ``topk``: a rerun
with another ``tau`` skips the kernel, a rerun with the same settings
computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from .defaults import (
    DEFAULT_AGGREGATE,
    DEFAULT_MEMORY_MB,
    DEFAULT_TAU_SEMI,
    DEFAULT_TAU_UNSUPERVISED,
    DEFAULT_TOPK_FRACTION,
)
from .distances import average_patches, euclidean_distances
from .memo import ArrayCache, content_digest, memoized, step_key
from .scores import cross_patch_scores, normal_scores, patch_scores
from .validation import check_bags, check_choice, check_finite_array, check_int
from .weights import Tau, check_tau, mask_weights, soft_weights, topk_weights, uniform_weights

__all__ = ["WEIGHT_MODES", "PIPELINE_WEIGHT_MODES", "WeightedEmbedding", "embed_bags", "effective_tau", "topk_patches",
           "weigh_patches", "score_key"]

#: How patch weights are made by a clustering (the estimator's and the CLI's choices).
WEIGHT_MODES = ("unsupervised", "semi", "uniform", "topk")
#: :data:`WEIGHT_MODES` plus the ground-truth ``"mask"`` baseline of the evaluation.
PIPELINE_WEIGHT_MODES = WEIGHT_MODES + ("mask",)


@dataclass(frozen=True)
class WeightedEmbedding:
    """What :func:`embed_bags` computed for ``N`` bags of ``M`` patches of dimension ``D``.

    Attributes
    ----------
    scores : ndarray, shape (N, M), float32
        Patch anomaly scores (computed, or the ones given).
    weights : ndarray, shape (N, M), float32
        Patch weights; rows sum to 1.
    embeddings : ndarray, shape (N, D), float64
        Weighted-average (WA) embeddings.
    mode : str
        The weight mode, one of :data:`PIPELINE_WEIGHT_MODES`.
    tau : float, str or None
        The temperature, as :func:`effective_tau` resolves it (``"<c>x"``: relative).
    topk : int or None
        Patches kept per image by ``mode="topk"``, else None.
    cached : tuple of str
        The steps served by the cache hook (``"scores"``, ``"embeddings"``).
    """

    scores: np.ndarray
    weights: np.ndarray
    embeddings: np.ndarray
    mode: str
    tau: Optional[Tau]
    topk: Optional[int]
    cached: Tuple[str, ...] = ()

    def distances(self) -> np.ndarray:
        """``(N, N)`` float64 Euclidean distances between the embeddings (Eq. 3)."""
        return euclidean_distances(self.embeddings)


def effective_tau(weights: str, tau: Optional[Tau]) -> Optional[Tau]:
    """The temperature a weight mode uses: ``tau`` (checked by :func:`~anomclust_lite.core.weights.check_tau`),
    or the mode's default.

    ``"topk"`` keeps ``tau`` as given (None: uniform over the top patches);
    ``"semi"`` defaults to :data:`~anomclust_lite.core.defaults.DEFAULT_TAU_SEMI`
    (relative: ``"0.4x"``), every other mode to
    :data:`~anomclust_lite.core.defaults.DEFAULT_TAU_UNSUPERVISED` (``"uniform"``
    and ``"mask"`` do not use it).

    Examples
    --------
    >>> effective_tau("semi", None), effective_tau("topk", None), effective_tau("unsupervised", 0.1)
    ('0.4x', None, 0.1)
    """
    if tau is not None:
        return check_tau(tau)
    if weights == "topk":
        return None
    return check_tau(DEFAULT_TAU_SEMI if weights == "semi" else DEFAULT_TAU_UNSUPERVISED)


def topk_patches(topk: Optional[int], m: int) -> int:
    """Patches kept by ``weights="topk"``: ``topk``, default ``max(1, m // 10)``; at most ``m``.

    Examples
    --------
    >>> topk_patches(None, 784), topk_patches(None, 5), topk_patches(3, 9)
    (78, 1, 3)
    """
    k = max(1, m // 10) if topk is None else check_int(topk, "topk", low=1)
    if k > m:
        raise ValueError(f"topk={k} exceeds the {m} patches per image; choose topk <= {m}")
    return k


def _check_sources(weights: str, normal_bags, reference_bags, scores, masks) -> None:
    """Refuse combinations of weight mode and inputs that would be ignored or are missing."""
    if normal_bags is not None and reference_bags is not None:
        raise ValueError("pass normal_bags (semi-supervised scores) or reference_bags (scores against a "
                         "reference set), not both")
    if scores is not None and (normal_bags is not None or reference_bags is not None):
        raise ValueError("scores were given, so normal_bags / reference_bags would be ignored; pass one or the other")
    if weights == "semi" and normal_bags is None and scores is None:
        raise ValueError("weights='semi' needs normal_bags (labelled normal images); or use weights='unsupervised'")
    if weights == "unsupervised" and normal_bags is not None:
        raise ValueError("normal_bags were given but weights='unsupervised' ignores them; use weights='semi'")
    if weights == "mask" and masks is None:
        raise ValueError("weights='mask' needs masks (defect fractions on the patch grid)")
    if weights != "mask" and masks is not None:
        raise ValueError(f"masks were given but weights={weights!r} ignores them; use weights='mask'")


def _score(arr: np.ndarray, normal_bags, reference_bags, reference, aggregate, q, memory_mb, n_threads,
           progress) -> np.ndarray:
    """Step 1: patch scores by Eq. 6, against a reference set, or by Eq. 5/7."""
    if normal_bags is not None:
        return normal_scores(arr, normal_bags, memory_mb=memory_mb, n_threads=n_threads, progress=progress)
    if reference_bags is not None:
        return cross_patch_scores(arr, reference_bags, aggregate=aggregate, q=q, memory_mb=memory_mb,
                                  n_threads=n_threads, progress=progress)
    return patch_scores(arr, aggregate=aggregate, q=q, reference=reference, memory_mb=memory_mb, n_threads=n_threads,
                        progress=progress)


def weigh_patches(scores: np.ndarray, mode: str, tau: Optional[Tau], k: Optional[int],
                  masks: Optional[np.ndarray] = None) -> np.ndarray:
    """Step 2: patch weights from the scores (or the masks) for a weight mode (``tau`` as resolved by
    :func:`effective_tau`, ``k`` by :func:`topk_patches`).

    Examples
    --------
    >>> weigh_patches(np.array([[0.0, 1.0]]), "topk", None, 1).tolist()
    [[0.0, 1.0]]
    """
    if mode in ("unsupervised", "semi"):
        return soft_weights(scores, tau)
    if mode == "topk":
        return topk_weights(scores, k, tau)
    if mode == "mask":
        w = mask_weights(masks)
        if w.shape != scores.shape:
            raise ValueError(f"masks give {w.shape[1]} patch cells per image for {w.shape[0]} images; "
                             f"the bags have shape (N, M) = {scores.shape}")
        return w
    return uniform_weights(*scores.shape)


def score_key(digest: str, normal_bags, reference_bags, reference, aggregate: str, q: float) -> str:
    """Cache key of the scores (:func:`embed_bags`'s): the bags' content and what the scoring depends on."""
    if normal_bags is not None:
        return step_key("normal_scores", bags=digest, normal_bags=content_digest(normal_bags))
    return step_key("patch_scores", bags=digest, aggregate=aggregate, q=float(q),
                    reference_bags=None if reference_bags is None else content_digest(reference_bags),
                    reference=None if reference is None else np.asarray(reference).tolist())


def embed_bags(
    bags: np.ndarray,
    *,
    weights: str = "unsupervised",
    tau: Optional[Tau] = None,
    aggregate: str = DEFAULT_AGGREGATE,
    q: float = DEFAULT_TOPK_FRACTION,
    topk: Optional[int] = None,
    normal_bags: Optional[np.ndarray] = None,
    reference_bags: Optional[np.ndarray] = None,
    reference: Optional[np.ndarray] = None,
    scores: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
    cache: Optional[ArrayCache] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> WeightedEmbedding:
    """Patch scores, weights and weighted-average embeddings of bags (the paper's Eq. 3-9).

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings (float32 or float16).
    weights : {"unsupervised", "semi", "uniform", "topk", "mask"}
        How patch weights are made; see the module docstring.
    tau : float or str, optional
        Softmax temperature: a number (patch-distance units) or ``"<c>x"`` (c times
        each image's patch-score std); default as :func:`effective_tau` says.
    aggregate, q
        Score aggregate over the other images, as in
        :func:`~anomclust_lite.core.scores.patch_scores`.
    topk : int, optional
        Patches kept by ``weights="topk"``; default ``max(1, M // 10)``.
    normal_bags : ndarray (R, M', D), optional
        Labelled normal images: scores by Eq. 6 (needed by ``"semi"``
        unless ``scores`` are given; refused by ``"unsupervised"``).
    reference_bags : ndarray (R, M', D), optional
        Score against these images instead of the other images of ``bags``.
    reference : array of int, optional
        Eq. 7: aggregate only over these images of ``bags``.
    scores : ndarray (N, M), optional
        Precomputed patch scores; then no scoring is done.
    masks : ndarray (N, M) or (N, h, w), optional
        For ``weights="mask"``: non-negative defect fraction of every patch
        cell, e.g. from :func:`anomclust_lite.datasets.mask_cells`.
    memory_mb, n_threads
        Working memory (MiB) and CPU threads of the scoring kernel.
    cache : ArrayCache, optional
        Cache hook for the scores and embeddings (see the module docstring
        and :mod:`anomclust_lite.core.memo`); e.g. an
        :class:`anomclust_lite.CacheFolder`.
    progress : callable, optional
        ``progress(done, total)`` in image pairs while the kernel scores.

    Returns
    -------
    WeightedEmbedding
        Scores are always filled (computed unless given), also for the
        ``"uniform"`` and ``"mask"`` baselines.

    Examples
    --------
    >>> from anomclust_lite import normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(4, 9, 3)))
    >>> out = embed_bags(bags, weights="topk", topk=2)
    >>> out.weights.shape, out.embeddings.shape, out.topk, out.distances().shape
    ((4, 9), (4, 3), 2, (4, 4))
    """
    mode = check_choice(weights, "weights", PIPELINE_WEIGHT_MODES)
    _check_sources(mode, normal_bags, reference_bags, scores, masks)
    arr = check_bags(bags, "bags", min_images=1)
    n, m, _ = arr.shape
    k = topk_patches(topk, m) if mode == "topk" else None
    t = effective_tau(mode, tau)
    digest = content_digest(arr) if cache is not None else ""
    if scores is None:
        s_key = score_key(digest, normal_bags, reference_bags, reference, aggregate, q) if cache is not None else ""
        s, s_hit = memoized(cache, "scores", s_key, (n, m), "float32", lambda: _score(
            arr, normal_bags, reference_bags, reference, aggregate, q, memory_mb, n_threads, progress))
    else:
        s, s_hit = np.asarray(scores), False
        check_finite_array(s, "scores", 2)
        if s.shape != (n, m):
            raise ValueError(f"scores must have shape (N, M) = ({n}, {m}) to match bags; got {s.shape}")
        s_key = content_digest(s) if cache is not None else ""
    w = weigh_patches(s, mode, t, k, masks)
    e_key = step_key("embeddings", bags=digest, scores=s_key, mode=mode, tau=t, topk=k,
                     masks=None if masks is None else content_digest(masks)) if cache is not None else ""
    emb, e_hit = memoized(cache, "embeddings", e_key, (n, arr.shape[2]), "float64", lambda: average_patches(arr, w))
    cached = tuple(name for name, hit in (("scores", s_hit), ("embeddings", e_hit)) if hit)
    return WeightedEmbedding(scores=s, weights=w, embeddings=emb, mode=mode, tau=t, topk=k, cached=cached)

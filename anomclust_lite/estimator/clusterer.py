"""`AnomalyClusterer`: fit a clustering on bags of patch embeddings, save it, assign new images.

Fitting follows the paper (Sohn et al., WACV 2023): per-patch anomaly scores
(unsupervised: against the other images; semi-supervised: against labelled
normal images) -> per-patch weights (softmax with temperature ``tau``, top-k
or uniform) -> weighted-average (WA) embeddings -> distances (Euclidean
between WA embeddings, or a Hausdorff-family bag distance) -> clustering into
K groups (K given, or chosen by the L-method, see :mod:`anomclust_lite.clustering.auto_k`).

The class is thin; each concept lives in its own module of this package:

- :mod:`.params`: the parameters' choices and validation;
- :mod:`.base`: ``get_params`` / ``set_params`` / ``repr`` from the signature;
- :mod:`.fitting`: the fitting steps; :mod:`.partition`: K and the labels (cluster 0
  the largest); :mod:`.centres`: centres and medoids;
- :mod:`.reference`: what is kept to weight new images (float16 bags, or the normal bank's coreset);
- :mod:`.assign`: assigning new images and flagging new types;
- :mod:`.model_io`: model.npz, plain arrays and a JSON header (no pickle).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..clustering.auto_k import DEFAULT_K_MAX
from ..clustering.dispatch import ClusteringWarning
from ..core.defaults import (
    DEFAULT_AGGREGATE, DEFAULT_BANK_SIZE, DEFAULT_CONSENSUS, DEFAULT_FIT_SIZE, DEFAULT_MEMORY_MB, DEFAULT_METHOD,
    DEFAULT_SCORE_REFERENCE, DEFAULT_SUBSAMPLE_FROM, DEFAULT_TOPK_FRACTION,
)
from ..core.anomaly import DEFAULT_RATE
from ..core.kernel import limit_blas
from ..core.memo import ArrayCache
from .assign import Assignment, FittedState
from .base import ParamsMixin
from .fitting import Fit
from .scale import assign_images, fit_images, fitted_state
from .model_io import CORRUPT, SavedModel, read_model, write_model
from .params import DEFAULT_REFERENCE_SIZE, Params, validate_params

__all__ = ["AnomalyClusterer"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Fitted attributes a loaded model does not have (``None`` after :meth:`AnomalyClusterer.load`).
_NOT_SAVED = ("scores_", "weights_", "embeddings_", "distances_", "center_distances_", "medoids_", "linkage_",
              "consensus_", "fit_sample_")


class AnomalyClusterer(ParamsMixin):
    """Cluster images of defective parts by defect type.

    Parameters
    ----------
    k : int, optional
        Number of clusters; ``None`` chooses it by the L-method
        (:func:`anomclust_lite.clustering.auto_k.choose_k`, candidates ``3..k_max``).
    weights : {"unsupervised", "semi", "uniform", "topk"}, default "unsupervised"
        ``"unsupervised"``: softmax of each image's patch scores against the
        other images (Eq. 5), so the patches unlike those of any other image
        (the defect) dominate its embedding; ``"semi"``: softmax of the
        distance of each patch to the nearest labelled-normal patch (Eq. 6),
        needs ``normal_bags``; ``"topk"``: only the ``topk`` highest-scoring
        patches (uniform, or a softmax with ``tau`` when given); ``"uniform"``:
        plain average pooling. Scores come from ``normal_bags`` when they are
        given, else from the other images.
    tau : float or str, optional
        Softmax temperature in patch-distance units (in [0, 2]): a patch whose
        score is ``tau`` higher gets ``e`` times the weight; or ``"<c>x"``, c times
        each image's own patch-score std. Default: ``DEFAULT_TAU_UNSUPERVISED``
        (0.02) or ``DEFAULT_TAU_SEMI`` (``"0.4x"``) from
        :mod:`anomclust_lite.core.defaults` (``None`` with ``"topk"``: uniform).
    aggregate : {"mean", "max", "min", "topk_mean"}, default "mean"
        How a patch's distances to the other images become its unsupervised score.
    q : float, default 0.1
        Fraction of nearest images averaged by ``aggregate="topk_mean"``.
    topk : int, optional
        Patches kept by ``weights="topk"``; default ``max(1, M // 10)``.
    distance : str, default "wa"
        ``"wa"`` (Euclidean between WA embeddings, the paper's method) or
        ``"hausdorff-<inner>"`` with inner ``max-min``, ``mean-min``,
        ``min-min`` or ``mean-mean`` (unweighted bag distances, a baseline).
    hausdorff_outer : {"max", "mean"}, default "max"
        How the two directed Hausdorff distances are combined.
    method : str, default "ward"
        ``ward``, ``complete``, ``average``, ``single``, ``kmeans``, ``gmm``,
        ``spectral`` or ``kmedoids`` (see :func:`anomclust_lite.clustering.dispatch.cluster`).
    k_max : int, default 15
        Largest K tried when choosing K automatically.
    memory_mb : float, default 512
        Working-memory budget of the scoring and distance kernels.
    n_threads : int, optional
        CPU threads of the kernels (the BLAS included); default one per CPU.
        A setting of the machine: results do not depend on it; not saved.
    seed : int, default 0
        Seed of every random choice (clustering restarts, reference subsample).
    reference_size : int, default 64
        Images stored for assigning new images (unsupervised); normal images
        the good group is calibrated on (semi; with ``exact``, the bank stored).
    new_type_threshold : float, optional
        Novelty beyond which an assigned image is flagged as a new type, in
        every cluster; default: each cluster's threshold calibrated at
        ``new_type_rate``.
    bag_dtype : {"float32", "float16"}, default "float32"
        Type the bags (and normal bags) are held in while fitting and
        assigning: ``"float16"`` halves the ``N * M * D`` storage; the kernels
        still compute in float32 (on real data NMI within 1e-3 of float32).
    good_group : {"off", "auto"}, default "off"
        ``"auto"``: with ``normal_bags``, the images whose anomaly score is at
        most the good-group threshold are set apart (label ``-1``) and K counts
        the defect clusters only. ``"off"``: every image is clustered (the
        paper's protocol); ``is_good_`` is still reported. See BENCHMARKS.md
        for why ``"off"`` is the default.
    good_rate : float, default 0.05
        False-reject rate of the good-group threshold: at most this probability
        that a new good part is not counted good (calibrated on the normal
        images' leave-one-out scores, :func:`anomclust_lite.calibrated_threshold`).
    new_type_rate : float, default 0.05
        False-flag rate of the new-type thresholds: at most this probability that a new image like the
        fitted images assigning gives a cluster is flagged (all fitted images calibrate clusters of < 20).
    bank_size, score_reference, subsample_from, fit_size, exact
        Speed at scale (defaults in :mod:`anomclust_lite.core.defaults`): with
        ``normal_bags``, scores are taken against a greedy k-centre coreset of
        ``bank_size`` normal patches (int, or a fraction: 0.1, at least 8192; :mod:`anomclust_lite.core.coreset`),
        and the novelty reference is a coreset of as many of its images' patches; unsupervised, from
        ``subsample_from`` (500) images on, against ``score_reference`` (64)
        seeded images (Eq. 7); above ``fit_size`` (2000) images a seeded sample
        is fitted and the rest assigned in chunks (:mod:`.scale`; ``bags`` may
        be a memory map). ``exact=True`` switches all three off.
    project_out : int or "auto", default "auto"
        Principal directions of the clustered images' patches (the good parts'
        variation, shared by every defect type) removed from the WA embeddings,
        also of assigned images (:mod:`anomclust_lite.core.projection`; not in
        the paper, which is 0). ``"auto"``: ``min(8, D // 16)``.
    consensus : {"auto", "off"}, default "auto"
        ``"auto"``: for Ward on softmax-weighted WA embeddings, the clusters
        are the consensus of the Ward trees at ``tau`` x 0.5 ... 1.5, each cut
        at K ... K + 6 (:mod:`anomclust_lite.clustering.consensus`; not in the
        paper; more accurate on average, BENCHMARKS.md); ``"off"``:
        the one tree at ``tau`` (the paper).

    Attributes
    ----------
    labels_ : (N,) int64
        Cluster of every fitted image (0 = largest cluster).
    scores_ : (N, M) float32
        Patch anomaly scores.
    weights_ : (N, M) float32
        Patch weights; rows sum to 1.
    embeddings_ : (N, D) float64
        WA embeddings (after the ``project_out`` projection).
    projection_ : Projection
        The directions removed from the embeddings (``projection_.rank`` =
        ``project_out``).
    distances_ : (N, N) float64 or None
        The distances that were clustered (None when a sample was fitted).
    centers_ : (K, D) float64
        Mean WA embedding of every cluster.
    center_distances_ : (N,) float64
        Distance of every image to its cluster's centre: Euclidean to the mean
        WA embedding for ``distance="wa"``, the distance to the cluster's medoid
        (the member with the smallest summed distance to the others) for
        Hausdorff distances.
    medoids_ : (K,) int64
        Index of every cluster's medoid under ``distances_``.
    k_ : int
    k_choice_ : KChoice
    linkage_ : (N-1, 4) float64 or None
        The linkage tree for hierarchical methods, the consensus tree with
        ``consensus`` (None when a sample was fitted).
    consensus_ : int
        Partitions combined by consensus Ward (0: none).
    new_type_threshold_ : float or None
        ``new_type_threshold``.
    anomaly_scores_ : (N,) float64
        Image anomaly score (mean of the top patch scores; higher = more
        likely defective): against the normal bank with ``normal_bags``,
        against the other images without.
    good_threshold_ : float or None
        Anomaly score at or below which an image counts as good (None without
        ``normal_bags``).
    is_good_ : (N,) bool
    good_group_ : bool
        Whether the good group was set apart (label ``-1``).
    confidence_ : (N,) float64
        Centre margin in [0, 1] (NaN in the good group), see
        :mod:`anomclust_lite.core.confidence`.
    cohesion_ : (K,) float64
        Mean confidence of every cluster's images.
    weak_ : list of str
        Why the clustering is weak (empty when it is not).
    novelty_thresholds_ : (K,) float64
        New-type threshold of every cluster.
    fit_sample_ : (S,) int64 or None
        The fitted sample's positions when ``N > fit_size`` (else None).
    timings_ : dict of str to float
        Seconds spent per stage of :meth:`fit`.
    cached_steps_ : list of str
        The steps of :meth:`fit` that its ``cache`` served.
    metadata_ : dict
        Extra JSON metadata saved with / loaded from the model.

    After :meth:`load`, only ``labels_``, ``centers_``, ``k_``, ``k_choice_``,
    ``new_type_threshold_``, ``anomaly_scores_``, ``good_threshold_``,
    ``is_good_``, ``good_group_``, ``novelty_thresholds_``, ``projection_`` and ``metadata_``
    are available.

    Conventions are scikit-learn's (``__init__`` stores, :meth:`fit` validates;
    :meth:`get_params` leaves out ``n_threads``, a machine setting never saved).

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import normalize_patches
    >>> rng = np.random.default_rng(0)
    >>> bags = normalize_patches(rng.normal(size=(12, 16, 8)) + np.repeat(np.eye(8)[:3], 4, 0)[:, None] * 3)
    >>> model = AnomalyClusterer(3).fit(bags)
    >>> model.labels_.shape, model.k_
    ((12,), 3)
    >>> bool((model.assign(bags).labels == model.labels_).all())
    True
    """


    _machine_params = ("n_threads",)

    def __init__(
        self,
        k: Optional[int] = None,
        *,
        weights: str = "unsupervised",
        tau: Optional[Union[float, str]] = None,
        aggregate: str = DEFAULT_AGGREGATE,
        q: float = DEFAULT_TOPK_FRACTION,
        topk: Optional[int] = None,
        distance: str = "wa",
        hausdorff_outer: str = "max",
        method: str = DEFAULT_METHOD,
        k_max: int = DEFAULT_K_MAX,
        memory_mb: float = DEFAULT_MEMORY_MB,
        n_threads: Optional[int] = None,
        seed: int = 0,
        reference_size: int = DEFAULT_REFERENCE_SIZE,
        new_type_threshold: Optional[float] = None,
        bag_dtype: str = "float32",
        good_group: str = "off",
        good_rate: float = DEFAULT_RATE,
        new_type_rate: float = DEFAULT_RATE,
        bank_size: Union[int, float] = DEFAULT_BANK_SIZE,
        score_reference: int = DEFAULT_SCORE_REFERENCE,
        subsample_from: int = DEFAULT_SUBSAMPLE_FROM,
        fit_size: int = DEFAULT_FIT_SIZE,
        exact: bool = False,
        project_out: Union[int, str] = "auto",
        consensus: str = DEFAULT_CONSENSUS,
    ) -> None:
        self.k = k
        self.weights = weights
        self.tau = tau
        self.aggregate = aggregate
        self.q = q
        self.topk = topk
        self.distance = distance
        self.hausdorff_outer = hausdorff_outer
        self.method = method
        self.k_max = k_max
        self.memory_mb = memory_mb
        self.n_threads = n_threads
        self.seed = seed
        self.reference_size = reference_size
        self.new_type_threshold = new_type_threshold
        self.bag_dtype = bag_dtype
        self.good_group = good_group
        self.good_rate = good_rate
        self.new_type_rate = new_type_rate
        self.bank_size = bank_size
        self.score_reference = score_reference
        self.subsample_from = subsample_from
        self.fit_size = fit_size
        self.exact = exact
        self.project_out = project_out
        self.consensus = consensus

    # ------------------------------------------------------------------ parameters

    def validate_params(self) -> Params:
        """Check every parameter (``fit`` does), returning the typed values; ``ValueError`` names the first bad one."""
        return validate_params(self._all_params())

    @property
    def effective_tau(self) -> Optional[Union[float, str]]:
        """The temperature used: ``tau``, or its default for the weight mode."""
        return self.validate_params().effective_tau

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise ValueError("this AnomalyClusterer is not fitted yet; call fit() or AnomalyClusterer.load() first")

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        bags: np.ndarray,
        *,
        normal_bags: Optional[np.ndarray] = None,
        progress: Optional[Callable[[str, int, int], None]] = None,
        cache: Optional[ArrayCache] = None,
    ) -> "AnomalyClusterer":
        """Fit the clustering.

        Parameters
        ----------
        bags : (N, M, D) array_like
            Unit-norm patch embeddings of the images to cluster, ``N >= 2``.
        normal_bags : (R, M', D) array_like, optional
            Unit-norm patch embeddings of labelled normal images (needed by
            ``weights="semi"``, refused by ``weights="unsupervised"``).
        progress : callable, optional
            ``progress(stage, done, total)``: ``(stage, 0, 0)`` as each stage starts, the image
            pairs done of ``total`` while a kernel runs ("scoring", "calibrating novelty", ...),
            ``("<step> (from the cache)", 0, 0)`` when the cache served a step.
        cache : ArrayCache, optional
            Cache hook (e.g. :class:`anomclust_lite.CacheFolder`): patch
            scores, embeddings and the trust signals' kernels are looked up
            by the content of the bags and the parameters they depend on
            before they are computed, and stored after (see
            :mod:`anomclust_lite.estimator.fitting`). Which steps it served
            is ``cached_steps_``.

        Returns
        -------
        self
        """
        params = self.validate_params()
        report = progress if progress is not None else (lambda stage, done, total: None)
        with limit_blas(params.n_threads):
            fit = fit_images(params, bags, normal_bags, report, cache)
        self._store(params, fit)
        n, k = fit.partition.labels.shape[0], fit.partition.k
        n_distinct = int(np.unique(fit.hashes, axis=0).shape[0])
        if n_distinct < k:
            warnings.warn(
                f"only {n_distinct} of the {n} images have distinct features (the others are duplicates); "
                f"K={k} clusters put identical images into different clusters arbitrarily",
                ClusteringWarning,
                stacklevel=2,
            )
        logger.info("fitted %d images into %d clusters (K %s)", n, k, fit.partition.choice.method)
        return self

    def _store(self, params: Params, fit: Fit) -> None:
        """Keep the fitted arrays as attributes."""
        self.scores_ = fit.scores
        self.weights_ = fit.weights
        self.embeddings_ = fit.embeddings
        self.distances_ = fit.distances
        self.linkage_, self.consensus_ = fit.partition.linkage, fit.partition.consensus
        self.labels_ = fit.partition.labels
        self.k_ = fit.partition.k
        self.k_choice_ = fit.partition.choice
        self.centers_ = fit.centres.centers
        self.center_distances_ = fit.centres.distances
        self.medoids_ = fit.centres.medoids
        self.confidence_ = fit.confidence
        self.cohesion_ = fit.cohesion
        self.weak_ = list(fit.weak_reasons)
        self.fit_sample_ = fit.sample
        self._set_state(fitted_state(params, fit))
        self._n_patches = fit.n_patches
        self.timings_ = fit.timings
        self.cached_steps_ = list(fit.cached)
        self.metadata_: Dict[str, Any] = dict(getattr(self, "metadata_", {}))
        self._fitted = True

    def fit_predict(
        self, bags: np.ndarray, *, normal_bags: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Fit and return the cluster of every image (``fit(...).labels_``)."""
        return self.fit(bags, normal_bags=normal_bags).labels_

    def fit_paths(
        self,
        paths: Sequence[PathLike],
        extractor: Any,
        normal_paths: Optional[Sequence[PathLike]] = None,
    ) -> "AnomalyClusterer":
        """Extract features with ``extractor`` (anything with ``extract(paths) -> bags``) and fit.

        Examples
        --------
        >>> class Fake:  # stands in for anomclust_lite.Extractor
        ...     def extract(self, paths):
        ...         from anomclust_lite import normalize_patches
        ...         return normalize_patches(np.random.default_rng(len(paths)).normal(size=(len(paths), 4, 3)))
        >>> AnomalyClusterer(2).fit_paths(["a.png", "b.png", "c.png"], Fake()).k_
        2
        """
        bags = extractor.extract(list(paths))
        normals = extractor.extract(list(normal_paths)) if normal_paths is not None else None
        return self.fit(bags, normal_bags=normals)

    # ------------------------------------------------------------------ assign

    def _set_state(self, state: FittedState) -> None:
        """Keep what assigning needs, and the attributes that mirror it."""
        self._fitted_state = state
        self._reference, self._reference_kind = state.reference, state.reference_kind
        self._hashes, self._wa_center_distances = state.hashes, state.wa_distances
        self.new_type_threshold_ = state.threshold
        self.anomaly_scores_ = state.anomaly_scores
        self.good_threshold_ = state.good_threshold
        self.is_good_ = (state.anomaly_scores <= state.good_threshold if state.good_threshold is not None
                         else np.zeros(state.labels.shape[0], dtype=bool))
        self.good_group_ = state.good_group
        self.novelty_thresholds_ = state.novelty.thresholds
        self.projection_ = state.projection

    def _state(self) -> FittedState:
        return self._fitted_state

    def assign(self, bags: np.ndarray, *, new_type_threshold: Optional[float] = None) -> Assignment:
        """Assign new images to the nearest cluster centre (see :mod:`anomclust_lite.estimator.assign`).

        Parameters
        ----------
        bags : (N, M, D) array_like
            Unit-norm patch embeddings made with the same extractor settings (may be a memory map: read in chunks).
        new_type_threshold : float, optional
            Overrides the model's threshold for this call.

        Returns
        -------
        Assignment
        """
        self._check_fitted()
        params = self.validate_params()
        with limit_blas(params.n_threads):
            return assign_images(params, self._state(), bags, new_type_threshold)

    def predict(self, bags: np.ndarray) -> np.ndarray:
        """Cluster of every new image (``assign(bags).labels``)."""
        return self.assign(bags).labels

    # ------------------------------------------------------------------ save / load

    def save(self, path: PathLike, *, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Save the fitted model to an ``.npz`` file (atomically, no pickle; see :mod:`.model_io`).

        Parameters
        ----------
        path : str or os.PathLike
            Target file.
        metadata : mapping, optional
            Extra JSON-serialisable information (the CLI: the extractor settings), loaded
            back as ``metadata_``; default the current ``metadata_``.
        """
        self._check_fitted()
        meta = dict(self.metadata_ if metadata is None else metadata)
        saved = SavedModel(self.validate_params().saved(), self._state(), self.k_, self.k_choice_,
                           self._n_patches, meta)
        write_model(path, saved)
        self.metadata_ = meta

    @classmethod
    def load(cls, path: PathLike) -> "AnomalyClusterer":
        """Load a model saved by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ValueError
            The file is not a model of this format version, or is damaged
            ("model.npz is corrupt or from an incompatible version: ...").
        """
        saved = read_model(path)
        try:
            model = cls(**saved.params)
            model.validate_params()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{CORRUPT}: bad header ({exc})") from None
        state = saved.state
        model.labels_, model.centers_ = state.labels, state.centers
        model.k_, model.k_choice_ = saved.k, saved.choice
        model._set_state(state)
        model._n_patches = saved.n_patches
        model.metadata_ = saved.metadata
        for attr in _NOT_SAVED:
            setattr(model, attr, None)
        model.timings_ = {}
        model.cached_steps_ = []
        model._fitted = True
        return model

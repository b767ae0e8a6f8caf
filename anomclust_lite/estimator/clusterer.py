"""`AnomalyClusterer`: fit a clustering on bags of patch embeddings, save it, assign new images.

Fitting follows the paper (Sohn et al., WACV 2023): per-patch anomaly scores
(unsupervised: against the other images; semi-supervised: against labelled
normal images) -> per-patch weights (softmax with temperature ``tau``, top-k
or uniform) -> weighted-average (WA) embeddings -> distances (Euclidean
between WA embeddings, or a Hausdorff-family bag distance) -> clustering into
K groups (K given, or chosen by the L-method, see :mod:`anomclust_lite.cluster.auto_k`).

Cluster ids are canonical: cluster 0 is the largest, ties broken by the
smallest image index.

Assigning new images
--------------------
:meth:`AnomalyClusterer.assign` gives every new image the cluster whose
centre (mean WA embedding of its fitted members) is nearest, with that
distance. The weights of a new image need anomaly scores, computed against
what the model stores:

- unsupervised scoring: a seeded subsample of ``reference_size`` fitted
  images' bags (all of them when fewer), stored as float16 - about
  ``reference_size * M * D * 2`` bytes before compression (64 images of
  28 x 28 patches of 128 dims: 12.8 MB; of 512 dims: 51 MB);
- semi-supervised scoring: a seeded subsample of the labelled normal patches,
  at most ``reference_size * M`` of them, as float16 (the same size bound).

Fitting scores every image against all other images (or all normal patches),
so assignment-time scores of a new image approximate what fitting would have
given it; raise ``reference_size`` for a closer match.

An image whose features are identical to a fitted image's (the same file
extracted with the same settings) is recognised by a hash of its float16
features and keeps its fitted cluster and fitted distance (``fitted`` is true
for it): assigning the fitted folder again reproduces the fitted clusters,
also for the few images a hierarchical clustering put in a cluster whose
centre is not their nearest.

An image is flagged as a possible **new type** when its distance to the
nearest centre exceeds ``new_type_threshold``: by default the largest
distance of any fitted image to its own cluster centre (so no fitted image
would be flagged). New images are weighted against the stored reference
rather than all fitted images, so their distances scatter a little more than
fitted ones; with a small ``reference_size`` a typical image may cross the
default threshold. Raise ``reference_size`` or pass a threshold.

Saved models are ``.npz`` files with plain arrays and a JSON header (no
pickle); :meth:`AnomalyClusterer.load` validates them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..files.atomic import atomic_save_npz
from ..core.kernel import limit_blas
from ..core.validation import check_bags, check_choice, check_int, check_memory_mb, check_n_threads, check_positive_float
from ..cluster.auto_k import DEFAULT_K_MAX, KChoice, choose_k, cut_linkage
from ..cluster.dispatch import HIERARCHICAL_METHODS, METHODS, ClusteringWarning, cluster, linkage_matrix
from ..core.defaults import (
    DEFAULT_AGGREGATE,
    DEFAULT_MEMORY_MB,
    DEFAULT_METHOD,
    DEFAULT_TAU_SEMI,
    DEFAULT_TAU_UNSUPERVISED,
    DEFAULT_TOPK_FRACTION,
)
from ..core.distances import wa_distances, weighted_average
from ..features.extractor import BAG_DTYPES
from ..core.hausdorff import hausdorff_distances
from ..core.scores import AGGREGATES, cross_patch_scores, normal_scores, patch_scores
from ..core.weights import soft_weights, topk_weights, uniform_weights

__all__ = [
    "WEIGHT_MODES",
    "DISTANCES",
    "BAG_DTYPES",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "DEFAULT_REFERENCE_SIZE",
    "Assignment",
    "AnomalyClusterer",
]

logger = logging.getLogger(__name__)

#: How patch weights are made (see :class:`AnomalyClusterer`).
WEIGHT_MODES = ("unsupervised", "semi", "uniform", "topk")
#: Image distances: Euclidean between WA embeddings, or a Hausdorff-family bag distance.
DISTANCES = ("wa", "hausdorff-max-min", "hausdorff-mean-min", "hausdorff-min-min", "hausdorff-mean-mean")
#: ``format`` entry of a saved model's JSON header.
MODEL_FORMAT = "anomclust_lite.AnomalyClusterer"
#: Version of the saved-model layout; :meth:`AnomalyClusterer.load` refuses others.
MODEL_FORMAT_VERSION = 1
#: Images (or images' worth of normal patches) stored for assigning new images.
DEFAULT_REFERENCE_SIZE = 64

_HASH_BYTES = 16
_CORRUPT = "model.npz is corrupt or from an incompatible version"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Assignment:
    """Result of :meth:`AnomalyClusterer.assign`.

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
    """

    labels: np.ndarray
    distances: np.ndarray
    new_type: np.ndarray
    fitted: np.ndarray
    threshold: float


def _bag_hashes(bags: np.ndarray) -> np.ndarray:
    """(N, 16) uint8 digests of each bag's float16 features."""
    out = np.empty((bags.shape[0], _HASH_BYTES), dtype=np.uint8)
    for i in range(bags.shape[0]):
        digest = hashlib.blake2b(np.ascontiguousarray(bags[i], dtype=np.float16).tobytes(), digest_size=_HASH_BYTES)
        out[i] = np.frombuffer(digest.digest(), dtype=np.uint8)
    return out


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by size (largest first), ties by their first image."""
    ids, first, inv, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))  # new id -> old position
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size)
    return rank[inv.reshape(-1)]


class AnomalyClusterer:
    """Cluster images of defective parts by defect type.

    Parameters
    ----------
    k : int, optional
        Number of clusters; ``None`` chooses it by the L-method
        (:func:`anomclust_lite.cluster.auto_k.choose_k`, candidates ``3..k_max``).
    weights : {"unsupervised", "semi", "uniform", "topk"}, default "unsupervised"
        ``"unsupervised"``: softmax of each image's patch scores against the
        other images (Eq. 5), so the patches unlike those of any other image
        (the defect) dominate its embedding; ``"semi"``: softmax of the
        distance of each patch to the nearest labelled-normal patch (Eq. 6),
        needs ``normal_bags``; ``"topk"``: only the ``topk`` highest-scoring
        patches (uniform, or a softmax with ``tau`` when given); ``"uniform"``:
        plain average pooling. Scores come from ``normal_bags`` when they are
        given, else from the other images.
    tau : float, optional
        Softmax temperature in patch-distance units (distances of unit vectors
        lie in [0, 2]): a patch whose score is ``tau`` higher gets ``e`` times
        the weight. Small: all weight on the top patches; large: average
        pooling. Default: ``DEFAULT_TAU_UNSUPERVISED`` or ``DEFAULT_TAU_SEMI``
        from :mod:`anomclust_lite.core.defaults` (``None`` with ``"topk"``: uniform
        over the top patches).
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
        ``spectral`` or ``kmedoids`` (see :func:`anomclust_lite.cluster.dispatch.cluster`).
    k_max : int, default 15
        Largest K tried when choosing K automatically.
    memory_mb : float, default 512
        Working-memory budget of the scoring and distance kernels.
    n_threads : int, optional
        CPU threads of the scoring and distance kernels (the BLAS included);
        default one per available CPU. A setting of the machine, not of the
        model: results do not depend on it, and it is not saved.
    seed : int, default 0
        Seed of every random choice (clustering restarts, reference subsample).
    reference_size : int, default 64
        Images (or images' worth of normal patches) stored for assigning new
        images; see the module docstring.
    new_type_threshold : float, optional
        Distance beyond which an assigned image is flagged as a new type;
        default: the largest fitted distance to the own centre.
    bag_dtype : {"float32", "float16"}, default "float32"
        Type the bags (and normal bags) are held in while fitting and
        assigning; they are converted when given in the other type.
        ``"float16"`` halves the ``N * M * D`` storage; the kernels still
        compute in float32, and on real data the partition is the same or
        nearly (NMI within 1e-3 of float32).

    Attributes
    ----------
    labels_ : (N,) int64
        Cluster of every fitted image (0 = largest cluster).
    scores_ : (N, M) float32
        Patch anomaly scores.
    weights_ : (N, M) float32
        Patch weights; rows sum to 1.
    embeddings_ : (N, D) float64
        WA embeddings.
    distances_ : (N, N) float64
        The distances that were clustered.
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
        The linkage tree for hierarchical methods.
    new_type_threshold_ : float
    timings_ : dict of str to float
        Seconds spent per stage of :meth:`fit`.
    metadata_ : dict
        Extra JSON metadata saved with / loaded from the model.

    After :meth:`load`, only ``labels_``, ``centers_``, ``k_``, ``k_choice_``,
    ``new_type_threshold_`` and ``metadata_`` are available.

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

    def __init__(
        self,
        k: Optional[int] = None,
        *,
        weights: str = "unsupervised",
        tau: Optional[float] = None,
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
    ) -> None:
        self.k = None if k is None else check_int(k, "k", low=1)
        self.weights = check_choice(weights, "weights", WEIGHT_MODES)
        self.tau = None if tau is None else check_positive_float(tau, "tau")
        self.aggregate = check_choice(aggregate, "aggregate", AGGREGATES)
        self.q = check_positive_float(q, "q")
        if self.q > 1:
            raise ValueError(f"q must be in (0, 1]; got {q!r}")
        self.topk = None if topk is None else check_int(topk, "topk", low=1)
        self.distance = check_choice(distance, "distance", DISTANCES)
        self.hausdorff_outer = check_choice(hausdorff_outer, "hausdorff_outer", ("max", "mean"))
        self.method = check_choice(method, "method", METHODS)
        if self.method in ("kmeans", "gmm") and self.distance != "wa":
            raise ValueError(
                f"method={method!r} needs coordinates, which only distance='wa' gives; "
                "use a hierarchical method, 'spectral' or 'kmedoids' with Hausdorff distances"
            )
        self.k_max = check_int(k_max, "k_max", low=2)
        self.memory_mb = check_memory_mb(memory_mb)
        self.n_threads = check_n_threads(n_threads)
        self.seed = check_int(seed, "seed", low=0)
        self.reference_size = check_int(reference_size, "reference_size", low=1)
        self.new_type_threshold = (
            None if new_type_threshold is None else check_positive_float(new_type_threshold, "new_type_threshold")
        )
        self.bag_dtype = check_choice(bag_dtype, "bag_dtype", BAG_DTYPES)
        self.metadata_: Dict[str, Any] = {}
        self._fitted = False

    # ------------------------------------------------------------------ parameters

    def get_params(self) -> Dict[str, Any]:
        """The constructor parameters as a JSON-ready dict."""
        return {
            "k": self.k,
            "weights": self.weights,
            "tau": self.tau,
            "aggregate": self.aggregate,
            "q": self.q,
            "topk": self.topk,
            "distance": self.distance,
            "hausdorff_outer": self.hausdorff_outer,
            "method": self.method,
            "k_max": self.k_max,
            "memory_mb": self.memory_mb,
            "seed": self.seed,
            "reference_size": self.reference_size,
            "new_type_threshold": self.new_type_threshold,
            "bag_dtype": self.bag_dtype,
        }

    @property
    def effective_tau(self) -> Optional[float]:
        """The temperature used: ``tau``, or its default for the weight mode."""
        if self.tau is not None or self.weights == "topk":
            return self.tau
        if self.weights == "semi":
            return float(DEFAULT_TAU_SEMI)
        return float(DEFAULT_TAU_UNSUPERVISED)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ValueError("this AnomalyClusterer is not fitted yet; call fit() or AnomalyClusterer.load() first")

    # ------------------------------------------------------------------ weights

    def _weights_from_scores(self, scores: np.ndarray) -> np.ndarray:
        n, m = scores.shape
        if self.weights in ("unsupervised", "semi"):
            return soft_weights(scores, self.effective_tau)
        if self.weights == "topk":
            k = self._topk_for(m)
            return topk_weights(scores, k, self.tau)
        return uniform_weights(n, m)

    def _topk_for(self, m: int) -> int:
        k = self.topk if self.topk is not None else max(1, m // 10)
        if k > m:
            raise ValueError(f"topk={k} exceeds the {m} patches per image; choose topk <= {m}")
        return k

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        bags: np.ndarray,
        *,
        normal_bags: Optional[np.ndarray] = None,
        progress: Optional[Callable[[str], None]] = None,
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
            Called with the name of each stage as it starts ("scoring",
            "distances", "choosing K", "clustering").

        Returns
        -------
        self
        """
        with limit_blas(self.n_threads):
            return self._fit(bags, normal_bags, progress)

    def _fit(
        self,
        bags: np.ndarray,
        normal_bags: Optional[np.ndarray],
        progress: Optional[Callable[[str], None]],
    ) -> "AnomalyClusterer":
        arr = check_bags(bags, "bags", min_images=2).astype(self.bag_dtype, copy=False)
        n, m, d = arr.shape
        normals = None
        if normal_bags is not None:
            normals = check_bags(normal_bags, "normal_bags", min_images=1, dim=d).astype(self.bag_dtype, copy=False)
        if self.weights == "semi" and normals is None:
            raise ValueError("weights='semi' needs normal_bags (labelled normal images); or use weights='unsupervised'")
        if self.weights == "unsupervised" and normals is not None:
            raise ValueError("normal_bags were given but weights='unsupervised' ignores them; use weights='semi'")
        if self.k is not None and self.k > n:
            raise ValueError(f"k={self.k} is larger than the number of images N={n}; choose k <= {n}")
        if self.weights == "topk":
            self._topk_for(m)
        note = progress if progress is not None else (lambda stage: None)
        timings: Dict[str, float] = {}

        note("scoring")
        t0 = time.perf_counter()
        if normals is not None:
            scores = normal_scores(arr, normals, memory_mb=self.memory_mb, n_threads=self.n_threads)
        else:
            scores = patch_scores(arr, aggregate=self.aggregate, q=self.q, memory_mb=self.memory_mb,
                                  n_threads=self.n_threads)
        weights = self._weights_from_scores(scores)
        embeddings = weighted_average(arr, weights)
        timings["scoring"] = time.perf_counter() - t0

        note("distances")
        t0 = time.perf_counter()
        if self.distance == "wa":
            dist = wa_distances(arr, weights)
        else:
            inner = self.distance[len("hausdorff-"):]
            dist = hausdorff_distances(arr, inner=inner, outer=self.hausdorff_outer, memory_mb=self.memory_mb,
                                       n_threads=self.n_threads)
        timings["distances"] = time.perf_counter() - t0

        x, metric = (embeddings, "euclidean") if self.distance == "wa" else (dist, "precomputed")
        t0 = time.perf_counter()
        z = linkage_matrix(x, method=self.method, metric=metric) if self.method in HIERARCHICAL_METHODS else None
        if self.k is None:
            note("choosing K")

            def partition(k: int) -> np.ndarray:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ClusteringWarning)
                    return cluster(x, k, method=self.method, metric=metric, seed=self.seed)

            if z is not None:
                choice = choose_k(dist, linkage=z, k_max=self.k_max)
            else:
                choice = choose_k(dist, partition=partition, k_max=self.k_max)
        else:
            choice = KChoice(self.k, "fixed")
        timings["choosing_k"] = time.perf_counter() - t0

        note("clustering")
        t0 = time.perf_counter()
        if z is not None:
            raw = cut_linkage(z, choice.k)
        else:
            raw = cluster(x, choice.k, method=self.method, metric=metric, seed=self.seed)
        labels = _canonical_labels(raw)
        k_found = int(labels.max()) + 1
        timings["clustering"] = time.perf_counter() - t0

        # Each column sorted first: the centres add nothing of their own to the image-order dependence
        # (the embeddings themselves may differ by float32 rounding under another order).
        centers = np.stack([np.sort(embeddings[labels == c], axis=0).mean(axis=0) for c in range(k_found)])
        wa_center_dist = np.linalg.norm(embeddings - centers[labels], axis=1)
        medoids = np.empty(k_found, dtype=np.int64)
        for c in range(k_found):
            members = np.flatnonzero(labels == c)
            medoids[c] = members[np.argmin(dist[np.ix_(members, members)].sum(axis=1))]
        center_dist = wa_center_dist if self.distance == "wa" else dist[np.arange(n), medoids[labels]]

        rng = np.random.default_rng(self.seed)
        if normals is None:
            ref_idx = np.sort(rng.choice(n, size=min(n, self.reference_size), replace=False))
            reference = arr[ref_idx].astype(np.float16)
            reference_kind = "images"
        else:
            reference = self._normal_bank(normals, m, rng)
            reference_kind = "normal-patches"

        self.scores_ = scores
        self.weights_ = weights
        self.embeddings_ = embeddings
        self.distances_ = dist
        self.linkage_ = z
        self.labels_ = labels
        self.k_ = k_found
        self.k_choice_ = choice
        self.centers_ = centers
        self.center_distances_ = center_dist
        self.medoids_ = medoids
        self._wa_center_distances = wa_center_dist
        self.new_type_threshold_ = (
            self.new_type_threshold if self.new_type_threshold is not None else float(wa_center_dist.max())
        )
        self._reference = reference
        self._reference_kind = reference_kind
        self._hashes = _bag_hashes(arr)
        self._n_patches = m
        self.timings_ = timings
        self._fitted = True
        n_distinct = int(np.unique(self._hashes, axis=0).shape[0])
        if n_distinct < k_found:
            warnings.warn(
                f"only {n_distinct} of the {n} images have distinct features (the others are duplicates); "
                f"K={k_found} clusters put identical images into different clusters arbitrarily",
                ClusteringWarning,
                stacklevel=2,
            )
        logger.info("fitted %d images into %d clusters (K %s)", n, k_found, choice.method)
        return self

    def _normal_bank(self, normals: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        """At most ``reference_size * m`` normal patches, grouped as bags of ``m`` patches, float16."""
        flat = normals.reshape(-1, normals.shape[2])
        cap = self.reference_size * m
        if flat.shape[0] > cap:
            flat = flat[np.sort(rng.choice(flat.shape[0], size=cap, replace=False))]
            return flat.reshape(self.reference_size, m, -1).astype(np.float16)
        return normals.astype(np.float16)

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

    def assign(self, bags: np.ndarray, *, new_type_threshold: Optional[float] = None) -> Assignment:
        """Assign new images to the nearest cluster centre.

        Parameters
        ----------
        bags : (N, M, D) array_like
            Unit-norm patch embeddings made with the same extractor settings.
        new_type_threshold : float, optional
            Overrides the model's threshold for this call.

        Returns
        -------
        Assignment
        """
        with limit_blas(self.n_threads):
            return self._assign(bags, new_type_threshold)

    def _assign(self, bags: np.ndarray, new_type_threshold: Optional[float]) -> Assignment:
        self._check_fitted()
        arr = check_bags(bags, "bags", min_images=1, dim=self.centers_.shape[1]).astype(self.bag_dtype, copy=False)
        threshold = (
            self.new_type_threshold_
            if new_type_threshold is None
            else check_positive_float(new_type_threshold, "new_type_threshold")
        )
        if self.weights == "topk":
            self._topk_for(arr.shape[1])
        if self._reference_kind == "images":
            scores = cross_patch_scores(arr, self._reference, aggregate=self.aggregate, q=self.q,
                                        memory_mb=self.memory_mb, n_threads=self.n_threads)
        else:
            scores = normal_scores(arr, self._reference, memory_mb=self.memory_mb, n_threads=self.n_threads)
        emb = weighted_average(arr, self._weights_from_scores(scores))
        d2 = ((emb[:, None, :] - self.centers_[None, :, :]) ** 2).sum(axis=2)
        labels = np.argmin(d2, axis=1).astype(np.int64)
        dist = np.sqrt(np.maximum(d2[np.arange(arr.shape[0]), labels], 0.0))

        lookup = {h.tobytes(): i for i, h in enumerate(self._hashes)}
        fitted = np.zeros(arr.shape[0], dtype=bool)
        for j, h in enumerate(_bag_hashes(arr)):
            i = lookup.get(h.tobytes())
            if i is not None:
                fitted[j] = True
                labels[j] = self.labels_[i]
                dist[j] = self._wa_center_distances[i]
        new_type = (dist > threshold) & ~fitted
        return Assignment(labels, dist, new_type, fitted, float(threshold))

    def predict(self, bags: np.ndarray) -> np.ndarray:
        """Cluster of every new image (``assign(bags).labels``)."""
        return self.assign(bags).labels

    # ------------------------------------------------------------------ save / load

    def save(self, path: PathLike, *, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Save the fitted model to an ``.npz`` file (atomically, no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Target file.
        metadata : mapping, optional
            Extra JSON-serialisable information kept in the file (the CLI
            stores the feature-extractor settings there); loaded back as
            ``metadata_``. Defaults to the current ``metadata_``.
        """
        from .. import __version__

        self._check_fitted()
        meta = dict(self.metadata_ if metadata is None else metadata)
        header = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "anomclust_lite_version": __version__,
            "params": self.get_params(),
            "k": self.k_,
            "k_choice": self.k_choice_.to_dict(),
            "new_type_threshold": self.new_type_threshold_,
            "reference_kind": self._reference_kind,
            "n_patches": self._n_patches,
            "metadata": meta,
        }
        try:
            text = json.dumps(header, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-serialisable (finite numbers, str keys): {exc}") from None
        atomic_save_npz(
            path,
            header=np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
            centers=self.centers_.astype(np.float64),
            labels=self.labels_.astype(np.int64),
            fitted_distances=self._wa_center_distances.astype(np.float64),
            fitted_hashes=self._hashes,
            reference=self._reference,
        )
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
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file {os.fspath(path)!r} does not exist; pass the model.npz written by a clustering run")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except Exception as exc:  # zipfile, zlib, the .npy parser, MemoryError: a damaged file raises any of them
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"{_CORRUPT}: cannot read it as an .npz file ({type(exc).__name__}: {reason})") from None
        return cls._from_arrays(arrays)

    @classmethod
    def _from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "AnomalyClusterer":
        from .. import __version__

        required = ("header", "centers", "labels", "fitted_distances", "fitted_hashes", "reference")
        missing = [key for key in required if key not in arrays]
        if missing:
            raise ValueError(f"{_CORRUPT}: missing arrays {', '.join(missing)}")
        try:
            header = json.loads(arrays["header"].astype(np.uint8).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{_CORRUPT}: unreadable header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
            raise ValueError(f"{_CORRUPT}: not an AnomalyClusterer model")
        if header.get("format_version") != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"{_CORRUPT}: format version {header.get('format_version')!r}, this anomclust_lite "
                f"({__version__}) reads version {MODEL_FORMAT_VERSION}"
            )
        try:
            params = dict(header["params"])
            model = cls(**params)
            choice = KChoice.from_dict(header["k_choice"])
            k = int(header["k"])
            threshold = float(header["new_type_threshold"])
            kind = str(header["reference_kind"])
            m = int(header["n_patches"])
            meta = dict(header["metadata"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{_CORRUPT}: bad header ({exc})") from None
        centers, labels = arrays["centers"], arrays["labels"]
        dists, hashes, reference = arrays["fitted_distances"], arrays["fitted_hashes"], arrays["reference"]
        n = labels.shape[0] if labels.ndim == 1 else -1
        problems = []
        if centers.ndim != 2 or centers.shape[0] != k or centers.dtype != np.float64 or not np.isfinite(centers).all():
            problems.append(f"centers has shape {centers.shape}, expected ({k}, D) finite float64")
        if labels.ndim != 1 or labels.dtype != np.int64 or n < 2 or (n and (labels.min() < 0 or labels.max() >= k)):
            problems.append("labels must be N >= 2 int64 cluster ids in 0..K-1")
        if dists.shape != (n,) or dists.dtype != np.float64:
            problems.append(f"fitted_distances has shape {dists.shape}, expected ({n},)")
        if hashes.shape != (n, _HASH_BYTES) or hashes.dtype != np.uint8:
            problems.append(f"fitted_hashes has shape {hashes.shape}, expected ({n}, {_HASH_BYTES})")
        if (
            reference.ndim != 3
            or reference.dtype != np.float16
            or (centers.ndim == 2 and reference.shape[2] != centers.shape[1])
        ):
            problems.append(f"reference has shape {reference.shape} / dtype {reference.dtype}, expected (R, M, D) float16")
        if kind not in ("images", "normal-patches") or not (math.isfinite(threshold) and threshold >= 0) or m < 1:
            problems.append("bad reference kind, threshold or patch count")
        if problems:
            raise ValueError(f"{_CORRUPT}: " + "; ".join(problems))
        model.labels_ = labels
        model.k_ = k
        model.k_choice_ = choice
        model.centers_ = centers
        model.new_type_threshold_ = threshold
        model._wa_center_distances = dists
        model._hashes = hashes
        model._reference = reference
        model._reference_kind = kind
        model._n_patches = m
        model.metadata_ = meta
        for attr in ("scores_", "weights_", "embeddings_", "distances_", "center_distances_", "medoids_", "linkage_"):
            setattr(model, attr, None)
        model.timings_ = {}
        model._fitted = True
        return model

"""Cluster embeddings, or a precomputed distance matrix, into exactly ``k`` groups.

:func:`cluster` is the single entry point for the methods compared in the Anomaly
Clustering paper (Sohn et al., WACV 2023):

* ``"ward"``, ``"complete"``, ``"average"``, ``"single"`` — agglomerative clustering
  (:func:`scipy.cluster.hierarchy.linkage`), cut into ``k`` clusters;
* ``"kmeans"`` — k-means++ seeding, Lloyd iterations, best of 10 restarts;
* ``"gmm"`` — full-covariance Gaussian mixture fitted by EM, k-means initialised;
* ``"spectral"`` — spectral clustering on a Gaussian-kernel affinity;
* ``"kmedoids"`` — PAM (BUILD + SWAP) on the distance matrix.

``metric="euclidean"`` takes embeddings ``(N, D)``; ``metric="precomputed"`` takes a
distance matrix ``(N, N)``.  Methods that need coordinates (``"kmeans"``, ``"gmm"``)
run on a classical-MDS embedding (:func:`mds_embedding`) of a precomputed matrix, as the
paper also applies them to its distances; for Euclidean distances this embedding
reproduces the points up to a rigid motion, so both metrics give the same partition.

Labels are relabelled in order of first appearance (``labels[0] == 0``), so results are
deterministic and comparable across methods.  Whenever a method returns fewer than
``k`` distinct clusters (e.g. k-means on duplicate points) a :class:`ClusteringWarning`
is emitted.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.linalg import eigh
from scipy.sparse.linalg import eigsh
from scipy.spatial.distance import cdist, squareform

from .auto_k import cut_linkage
from .gmm import gaussian_mixture
from .kmeans import kmeans
from .kmedoids import pam
from .labels import renumber_labels
from .spectral import spectral_clustering
from ..core.validation import check_choice, check_finite_array, check_int

__all__ = [
    "HIERARCHICAL_METHODS",
    "METHODS",
    "METRICS",
    "ClusteringWarning",
    "cluster",
    "linkage_matrix",
    "mds_embedding",
]

logger = logging.getLogger(__name__)

#: Agglomerative methods, as named by :func:`scipy.cluster.hierarchy.linkage`.
HIERARCHICAL_METHODS = ("ward", "complete", "average", "single")
#: Every method accepted by :func:`cluster`.
METHODS = HIERARCHICAL_METHODS + ("kmeans", "gmm", "spectral", "kmedoids")
#: Accepted values of ``metric``.
METRICS = ("euclidean", "precomputed")

#: Tolerance, relative to the largest absolute entry, for the symmetry, the zero
#: diagonal and the non-negativity of a precomputed distance matrix (generous enough
#: for distances computed in float32).
DISTANCE_RTOL = 1e-5
#: MDS keeps eigenvalues above this fraction of the largest absolute eigenvalue.
MDS_EIGENVALUE_RTOL = 1e-10
#: With a few components asked of more points than this, MDS finds only those eigenpairs (Lanczos)
#: instead of all N: a 2-D map of thousands of images in seconds instead of minutes.
MDS_PARTIAL_MIN_POINTS = 400

SeedLike = Union[int, np.random.Generator]


class ClusteringWarning(UserWarning):
    """A clustering method produced fewer than the ``k`` clusters asked for."""


# --------------------------------------------------------------------------- validation


def _check_distance_matrix(value: object, name: str) -> np.ndarray:
    """Validate a distance matrix; return it symmetrised, float64, exact zero diagonal."""
    dist = check_finite_array(value, name, 2)
    if dist.shape[0] != dist.shape[1]:
        raise ValueError(
            f"{name} must be a square (N, N) distance matrix; got shape {dist.shape}. "
            "Pass embeddings with metric='euclidean' instead"
        )
    tol = DISTANCE_RTOL * (float(np.abs(dist).max()) if dist.size else 0.0)
    asymmetry = float(np.abs(dist - dist.T).max()) if dist.size else 0.0
    if asymmetry > tol:
        raise ValueError(
            f"{name} must be a symmetric distance matrix; max |{name} - {name}.T| = {asymmetry:.3g} "
            f"exceeds the tolerance {tol:.3g}. Symmetrise it, e.g. ({name} + {name}.T) / 2"
        )
    diagonal = float(np.abs(np.diag(dist)).max()) if dist.size else 0.0
    if diagonal > tol:
        raise ValueError(
            f"{name} must have a zero diagonal (distance of a point to itself); found {diagonal:.3g}"
        )
    if dist.size and float(dist.min()) < -tol:
        raise ValueError(f"{name} must be non-negative; found {float(dist.min()):.3g}")
    sym = 0.5 * (dist + dist.T)
    np.fill_diagonal(sym, 0.0)
    np.maximum(sym, 0.0, out=sym)  # rounding-level negatives only (checked above)
    return sym


def _check_data(x: object, metric: str) -> np.ndarray:
    """Embeddings ``(N, D)`` or a distance matrix ``(N, N)`` as float64, ``N >= 2``."""
    data = _check_distance_matrix(x, "x") if metric == "precomputed" else check_finite_array(x, "x", 2)
    if data.shape[0] < 2 or data.shape[1] < 1:
        raise ValueError(
            f"x must hold at least 2 samples (rows) and 1 column to cluster; got shape {data.shape}"
        )
    return data


def _as_generator(seed: object) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer or a numpy.random.Generator; got {seed!r}")
    return np.random.default_rng(int(seed))


# --------------------------------------------------------------------------- helpers


def _linkage(data: np.ndarray, method: str, metric: str) -> np.ndarray:
    if metric == "precomputed":
        return linkage(squareform(data, checks=False), method=method)
    return linkage(data, method=method, metric="euclidean")


def _hierarchical_labels(z: np.ndarray, k: int) -> np.ndarray:
    labels = fcluster(z, k, criterion="maxclust")
    if np.unique(labels).size != k:
        logger.debug(
            "fcluster(maxclust=%d) gave %d clusters (tied merge heights); cutting by merge order",
            k,
            np.unique(labels).size,
        )
        labels = cut_linkage(z, k)
    return labels


def _double_centred(dist: np.ndarray) -> np.ndarray:
    """``B = −½ J D² J`` of classical MDS, symmetric."""
    squared = dist**2
    row_mean = squared.mean(axis=1)
    gram = -0.5 * (squared - row_mean[:, None] - row_mean[None, :] + row_mean.mean())
    return 0.5 * (gram + gram.T)


def _leading_eigenpairs(gram: np.ndarray, count: int) -> "tuple[np.ndarray, np.ndarray, float]":
    """The ``count`` largest eigenpairs of ``gram`` (largest first) and its largest absolute eigenvalue.

    Lanczos from a fixed start vector (not the constant vector, which double
    centring puts in the null space), so the result is deterministic; each
    vector's sign is fixed by its largest coordinate.
    """
    n = gram.shape[0]
    start = np.cos(np.arange(n) * 1.2345 + 0.5)
    values, vectors = eigsh(gram, k=count, which="LA", v0=start)
    top = float(np.abs(eigsh(gram, k=1, which="LM", v0=start, return_eigenvectors=False)).max())
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(count)])
    return values, vectors * np.where(signs == 0, 1.0, signs), top


def _classical_mds(dist: np.ndarray, n_components: Optional[int]) -> np.ndarray:
    n = dist.shape[0]
    gram = _double_centred(dist)
    if n_components is not None and n >= MDS_PARTIAL_MIN_POINTS and n_components < n // 4:
        values, vectors, top = _leading_eigenpairs(gram, n_components)
    else:
        values, vectors = eigh(gram)
        values, vectors = values[::-1], vectors[:, ::-1]
        top = float(np.abs(values).max())
    keep = np.flatnonzero(values > MDS_EIGENVALUE_RTOL * top)
    if n_components is not None:
        keep = keep[:n_components]
    if keep.size == 0:
        return np.zeros((n, 1))
    return vectors[:, keep] * np.sqrt(values[keep])


def _embeddings(data: np.ndarray, metric: str) -> np.ndarray:
    return _classical_mds(data, None) if metric == "precomputed" else data


def _distances(data: np.ndarray, metric: str) -> np.ndarray:
    return data if metric == "precomputed" else cdist(data, data)


# --------------------------------------------------------------------------- public API


def mds_embedding(dist: ArrayLike, n_components: Optional[int] = None) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling of a distance matrix.

    Double-centres the squared distances, ``B = −½ J D² J`` with ``J = I − 11ᵀ/N``, and
    returns ``V Λ^{1/2}`` for the eigenpairs of ``B`` with positive eigenvalues (above
    ``MDS_EIGENVALUE_RTOL`` times the largest absolute eigenvalue), largest first.  For
    Euclidean distances the result reproduces the distances exactly (the points up to
    a rigid motion).  For non-Euclidean dissimilarities ``B`` has negative eigenvalues;
    dropping them gives the closest Euclidean configuration in the ``B`` sense, and the
    embedded distances only approximate the input.

    Parameters
    ----------
    dist : array_like
        ``(N, N)`` symmetric, non-negative, finite distances with zero diagonal.
    n_components : int, optional
        Keep at most this many leading components (default: all positive ones).

    Returns
    -------
    np.ndarray
        ``(N, P)`` float64 coordinates, ``P`` = number of kept components; ``(N, 1)`` zeros
        when all points coincide.

    Raises
    ------
    ValueError
        If ``dist`` is not a valid distance matrix or ``n_components`` is not an integer >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> x = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    >>> emb = mds_embedding(cdist(x, x))
    >>> emb.shape, bool(np.allclose(cdist(emb, emb), cdist(x, x)))
    ((3, 2), True)
    """
    d = _check_distance_matrix(dist, "dist")
    if d.shape[0] == 0:
        raise ValueError("dist must hold at least 1 point; got an empty (0, 0) matrix")
    if n_components is not None:
        n_components = check_int(n_components, "n_components", low=1)
    return _classical_mds(d, n_components)


def linkage_matrix(x: ArrayLike, *, method: str = "ward", metric: str = "euclidean") -> np.ndarray:
    """SciPy linkage matrix of agglomerative clustering (for dendrograms and cuts).

    Parameters
    ----------
    x : array_like
        ``(N, D)`` embeddings (``metric="euclidean"``) or an ``(N, N)`` distance matrix
        (``metric="precomputed"``: square, symmetric, finite, non-negative, zero
        diagonal), ``N >= 2``.
    method : {"ward", "complete", "average", "single"}
        Linkage criterion.  Ward on a precomputed non-Euclidean matrix is allowed, as in
        the paper, but the Lance–Williams Ward update assumes Euclidean distances: with
        other dissimilarities it is a heuristic and its merge heights are no longer
        increases of within-cluster variance.
    metric : {"euclidean", "precomputed"}
        How to read ``x``.

    Returns
    -------
    np.ndarray
        ``(N − 1, 4)`` float64 linkage matrix in SciPy's format: merged cluster ids,
        merge height, size of the new cluster; rows sorted by height.

    Raises
    ------
    ValueError
        On invalid ``x``, ``method`` or ``metric``.

    Examples
    --------
    >>> import numpy as np
    >>> z = linkage_matrix(np.array([[0.0], [1.0], [5.0]]), method="single")
    >>> z[:, 2].tolist()
    [1.0, 4.0]
    """
    method = check_choice(method, "method", HIERARCHICAL_METHODS)
    metric = check_choice(metric, "metric", METRICS)
    return _linkage(_check_data(x, metric), method, metric)


def cluster(
    x: ArrayLike,
    k: int,
    *,
    method: str = "ward",
    metric: str = "euclidean",
    seed: SeedLike = 0,
) -> np.ndarray:
    """Partition ``N`` samples into ``k`` clusters.

    Parameters
    ----------
    x : array_like
        ``(N, D)`` embeddings (``metric="euclidean"``) or an ``(N, N)`` distance matrix
        (``metric="precomputed"``: square, finite, non-negative, zero diagonal and
        symmetric within ``DISTANCE_RTOL`` of its largest entry; it is symmetrised).
        ``N >= 2``.
    k : int
        Number of clusters, ``1 <= k <= N``.  ``k == 1`` puts everything in cluster 0 and
        ``k == N`` gives every sample its own cluster, for every method.
    method : {"ward", "complete", "average", "single", "kmeans", "gmm", "spectral", "kmedoids"}
        - Hierarchical methods: SciPy linkage on ``x`` (or on the condensed precomputed
          matrix), cut with ``fcluster(criterion="maxclust")``; when tied merge heights
          make that give fewer than ``k`` clusters, the cut keeps exactly the first
          ``N − k`` merges of the linkage order instead, so there are always ``k``
          clusters.  Ward on a non-Euclidean precomputed matrix is allowed (as in the
          paper) but is then a heuristic: the Lance–Williams Ward update assumes
          Euclidean distances, and its merge heights are no longer variances.
        - ``"kmeans"``: greedy k-means++ seeding, Lloyd iterations to a fixed point,
          best inertia of 10 restarts, float64.
        - ``"gmm"``: full covariances, ``reg_covar = 1e-6`` on the diagonals, EM from a
          k-means start, best mean log-likelihood of 3 initialisations.
        - ``"kmeans"`` and ``"gmm"`` on a precomputed matrix run on its classical-MDS
          embedding (:func:`mds_embedding`, all positive components).
        - ``"spectral"``: affinity ``exp(−d² / (2σ²))``, ``σ`` = median of the non-zero
          pairwise distances; ``k`` leading eigenvectors of ``D^{-1/2} A D^{-1/2}``,
          rows normalised to unit length, then k-means (10 restarts).
        - ``"kmedoids"``: PAM, greedy BUILD then best-improvement SWAP, on the distance
          matrix (Euclidean distances of ``x`` unless precomputed).  Deterministic; it
          does not use ``seed``.
    metric : {"euclidean", "precomputed"}
        How to read ``x``.
    seed : int or numpy.random.Generator
        Source of all randomness (``"kmeans"``, ``"gmm"``, ``"spectral"``).  The same
        integer seed gives the same labels; a Generator is consumed.

    Returns
    -------
    np.ndarray
        ``(N,)`` int64 labels in ``0..k-1``, numbered in order of first appearance
        (``labels[0] == 0``).  Every label is used unless the method found fewer than
        ``k`` clusters, which emits a :class:`ClusteringWarning`.

    Raises
    ------
    ValueError
        On invalid ``x``, ``k``, ``method``, ``metric`` or ``seed``.

    Warns
    -----
    ClusteringWarning
        When fewer than ``k`` distinct clusters came out (e.g. duplicate points).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[5.0, 5.0], [0.0, 0.0], [0.1, 0.0], [5.1, 5.0]])
    >>> cluster(x, 2)
    array([0, 1, 1, 0])
    >>> cluster(x, 2, method="kmeans", seed=0)
    array([0, 1, 1, 0])
    >>> from scipy.spatial.distance import cdist
    >>> cluster(cdist(x, x), 2, method="kmedoids", metric="precomputed")
    array([0, 1, 1, 0])
    """
    method = check_choice(method, "method", METHODS)
    metric = check_choice(metric, "metric", METRICS)
    data = _check_data(x, metric)
    n = data.shape[0]
    k = check_int(k, "k", low=1, high=n)
    rng = _as_generator(seed)

    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)

    if method in HIERARCHICAL_METHODS:
        labels = _hierarchical_labels(_linkage(data, method, metric), k)
    elif method == "kmeans":
        labels = kmeans(_embeddings(data, metric), k, rng).labels
    elif method == "gmm":
        labels = gaussian_mixture(_embeddings(data, metric), k, rng).labels
    elif method == "spectral":
        labels = spectral_clustering(_distances(data, metric), k, rng)
    else:  # "kmedoids"
        labels = pam(_distances(data, metric), k).labels

    labels = renumber_labels(labels)
    n_found = int(labels.max()) + 1
    if n_found < k:
        warnings.warn(
            f"cluster(method={method!r}) produced only {n_found} distinct clusters instead of "
            f"k={k} (duplicate or nearly identical samples?); labels use 0..{n_found - 1}",
            ClusteringWarning,
            stacklevel=2,
        )
    return labels

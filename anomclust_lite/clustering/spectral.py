"""Spectral clustering (Ng–Jordan–Weiss) on a Gaussian affinity built from distances.

Private module: :func:`anomclust_lite.clustering.dispatch.cluster` validates its inputs and
calls :func:`spectral_clustering`; the helpers here trust theirs.

Affinity ``A_ij = exp(−d_ij² / (2σ²))`` with ``σ`` the median of the non-zero pairwise
distances (``σ = 1`` when all points coincide; then every affinity is 1 whatever ``σ``).
The diagonal is ``exp(0) = 1``, so every degree is at least 1 and an isolated point
cannot divide by zero.  The embedding is the ``k`` leading eigenvectors of the
symmetric normalised affinity ``D^{-1/2} A D^{-1/2}`` (equivalently the ``k``
smallest of the normalised Laplacian ``I − D^{-1/2} A D^{-1/2}``), rows normalised
to unit length, then clustered by k-means.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from .kmeans import kmeans

__all__ = ["gaussian_affinity", "spectral_embedding", "spectral_clustering"]


def gaussian_affinity(dist: np.ndarray) -> "tuple[np.ndarray, float]":
    """Gaussian-kernel affinity with the median-distance bandwidth.

    Parameters
    ----------
    dist : np.ndarray
        ``(N, N)`` symmetric non-negative float64 distances, zero diagonal.

    Returns
    -------
    affinity : np.ndarray
        ``(N, N)`` float64 ``exp(−d² / (2σ²))``.
    sigma : float
        The bandwidth used: median of the non-zero entries of the upper triangle, or 1.0
        when there are none.

    Examples
    --------
    >>> import numpy as np
    >>> a, sigma = gaussian_affinity(np.array([[0.0, 2.0], [2.0, 0.0]]))
    >>> sigma, bool(np.isclose(a[0, 1], np.exp(-0.5)))
    (2.0, True)
    """
    upper = dist[np.triu_indices(dist.shape[0], k=1)]
    nonzero = upper[upper > 0.0]
    sigma = float(np.median(nonzero)) if nonzero.size else 1.0
    affinity = np.exp(-(dist**2) / (2.0 * sigma**2))
    return affinity, sigma


def spectral_embedding(affinity: np.ndarray, n_components: int) -> np.ndarray:
    """Row-normalised leading eigenvectors of ``D^{-1/2} A D^{-1/2}``.

    Parameters
    ----------
    affinity : np.ndarray
        ``(N, N)`` symmetric non-negative float64 affinity with positive degrees.
    n_components : int
        Number of eigenvectors, ``1 <= n_components <= N``.

    Returns
    -------
    np.ndarray
        ``(N, n_components)`` float64; each non-zero row has unit length.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.kron(np.eye(2), np.ones((2, 2)))  # two disconnected pairs
    >>> emb = spectral_embedding(a, 2)
    >>> bool(np.allclose(np.abs(emb @ emb.T), np.kron(np.eye(2), np.ones((2, 2)))))
    True
    """
    n = affinity.shape[0]
    inv_sqrt_degree = 1.0 / np.sqrt(affinity.sum(axis=1))
    normalised = affinity * inv_sqrt_degree[:, None] * inv_sqrt_degree[None, :]
    normalised = 0.5 * (normalised + normalised.T)
    _, vectors = eigh(normalised, subset_by_index=[n - n_components, n - 1])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0.0, norms, 1.0)


def spectral_clustering(
    dist: np.ndarray, k: int, rng: np.random.Generator, *, n_init: int = 10
) -> np.ndarray:
    """Cluster points given their pairwise distances with spectral clustering.

    Parameters
    ----------
    dist : np.ndarray
        ``(N, N)`` symmetric non-negative float64 distances, zero diagonal.
    k : int
        Number of clusters, ``1 <= k <= N``.
    rng : np.random.Generator
        Source of all randomness (k-means on the embedding).
    n_init : int
        k-means restarts on the spectral embedding.

    Returns
    -------
    np.ndarray
        ``(N,)`` int64 labels in ``0..k-1`` (some may be unused).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.spatial.distance import cdist
    >>> x = np.array([[0.0], [0.1], [0.2], [9.0], [9.1], [9.2]])
    >>> labels = spectral_clustering(cdist(x, x), 2, np.random.default_rng(0))
    >>> len(set(labels[:3])), len(set(labels[3:])), bool(labels[0] != labels[3])
    (1, 1, True)
    """
    affinity, _ = gaussian_affinity(dist)
    embedding = spectral_embedding(affinity, k)
    return kmeans(embedding, k, rng, n_init=n_init).labels

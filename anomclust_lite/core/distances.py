"""Weighted-average (WA) embeddings and the distances between them.

Each bag ``Z_i`` (Eq. 1 of Sohn et al.) becomes its weighted average
``sum_m a_im z_im`` with weights ``a_im >= 0`` summing to 1 over the patches
(Eq. 2, :func:`weighted_average`); the paper's image distance is
``d(Z_i, Z_j) = ||sum_m a_im z_im - sum_n a_jn z_jn||`` (Eq. 3,
:func:`wa_distances`): the Euclidean distance between the weighted averages
of the two bags.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

from .validation import check_bags, check_finite_array

__all__ = ["weighted_average", "average_patches", "wa_distances", "euclidean_distances", "squared_distances_to"]

#: Tolerance on the row sums of the weights.
_ROW_SUM_ATOL = 1e-3
#: Images per chunk when accumulating in float64.
_CHUNK_ELEMENTS = 1 << 22


def _check_weights(weights: object, n: int, m: int) -> np.ndarray:
    w = check_finite_array(weights, "weights", 2)
    if w.shape != (n, m):
        raise ValueError(f"weights must have shape (N, M) = ({n}, {m}) to match bags; got {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be non-negative")
    sums = w.sum(axis=1)
    bad = np.abs(sums - 1.0) > _ROW_SUM_ATOL
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"weights rows must sum to 1; row {i} sums to {sums[i]:.6g}")
    return w


def weighted_average(bags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of each bag's patches, ``sum_m a_im z_im`` (Eq. 2 of the paper).

    Accumulated in float64, chunk by chunk, so float16 or float32 bags need
    no full-size float64 copy.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings.
    weights : ndarray, shape (N, M)
        Non-negative weights whose rows sum to 1.

    Returns
    -------
    ndarray, shape (N, D), float64
        The WA embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import weighted_average, uniform_weights, normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(3, 4, 2)))
    >>> emb = weighted_average(bags, uniform_weights(3, 4))
    >>> bool(np.allclose(emb, bags.mean(axis=1), atol=1e-6))
    True
    """
    return average_patches(check_bags(bags, "bags", min_images=1), weights)


def average_patches(arr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`weighted_average` of bags that already passed :func:`~anomclust_lite.core.validation.check_bags`.

    The weights are still checked; the O(N*M*D) bag check is not repeated.

    Examples
    --------
    >>> import numpy as np
    >>> average_patches(np.ones((1, 2, 3), np.float32) / np.sqrt(3), np.array([[0.5, 0.5]])).round(3).tolist()
    [[0.577, 0.577, 0.577]]
    """
    n, m, d = arr.shape
    w = _check_weights(weights, n, m)
    out = np.empty((n, d), dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // (m * d))
    for s in range(0, n, step):
        chunk = arr[s : s + step].astype(np.float64)
        out[s : s + step] = np.einsum("nm,nmd->nd", w[s : s + step], chunk)
    return out


def wa_distances(bags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pairwise distances between WA embeddings (Eq. 3 of the paper).

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings.
    weights : ndarray, shape (N, M)
        Instance weights, rows summing to 1 (e.g. :func:`soft_weights`).

    Returns
    -------
    ndarray, shape (N, N), float64
        Symmetric, zero diagonal.

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import wa_distances, uniform_weights, normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(3, 4, 2)))
    >>> wa_distances(bags, uniform_weights(3, 4)).shape
    (3, 3)
    """
    return euclidean_distances(weighted_average(bags, weights))


def euclidean_distances(embeddings: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances between the rows of ``(N, D)`` embeddings, ``(N, N)`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> euclidean_distances(np.array([[0.0, 0.0], [3.0, 4.0]])).tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    if embeddings.shape[0] == 1:
        return np.zeros((1, 1))
    return squareform(pdist(embeddings, metric="euclidean"))


#: Elements of the ``(rows, K, D)`` difference block :func:`squared_distances_to` holds at once (32 MiB).
_BLOCK_ELEMENTS = 2**22


def squared_distances_to(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of every point to every centre, ``(N, D), (K, D) -> (N, K)`` float64.

    Summed from the differences (no ``|x|² + |c|² - 2 x·c`` cancellation), a
    block of rows at a time so that the ``(N, K, D)`` differences never exist
    at once; each entry is the same whatever the block.

    Examples
    --------
    >>> squared_distances_to(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [3.0, 0.0]])).tolist()
    [[0.0, 9.0], [25.0, 16.0]]
    """
    x = np.asarray(points, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    out = np.empty((x.shape[0], c.shape[0]), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // max(1, c.size))
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        out[start : start + step] = ((block[:, None, :] - c[None]) ** 2).sum(axis=2)
    return out

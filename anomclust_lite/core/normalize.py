"""L2 normalisation of patch embeddings."""

from __future__ import annotations

import numpy as np

from .validation import check_finite_array

__all__ = ["normalize_patches"]


def normalize_patches(bags: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Scale every patch embedding to unit L2 norm.

    Norms are computed in float64. A patch whose norm is below ``eps``
    cannot be normalised and raises ``ValueError`` (no silent zero rows).

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Patch embeddings.
    eps : float
        Smallest acceptable norm.

    Returns
    -------
    ndarray, shape (N, M, D), float32

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import normalize_patches
    >>> normalize_patches(np.array([[[3.0, 4.0]]])).tolist()
    [[[0.6000000238418579, 0.800000011920929]]]
    """
    arr = check_finite_array(bags, "bags", 3)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    if (norms < eps).any():
        i, j, _ = np.argwhere(norms < eps)[0]
        raise ValueError(f"bags patch {j} of image {i} has (near) zero norm and cannot be normalised")
    return (arr / norms).astype(np.float32)

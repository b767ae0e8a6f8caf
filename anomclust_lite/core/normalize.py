"""L2 normalisation of patch embeddings."""

from __future__ import annotations

import numpy as np

from .validation import check_finite_array

__all__ = ["normalize_patches", "patch_norms"]


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
    arr = np.asarray(bags)
    if arr.dtype != np.float32:  # float32 is read as it is: no float64 copy of a large batch
        arr = check_finite_array(arr, "bags", 3)
    elif arr.ndim != 3 or not np.isfinite(arr).all():
        check_finite_array(arr, "bags", 3)  # raises with its usual message
    norms = patch_norms(arr)[..., None]
    if (norms < eps).any():
        i, j, _ = np.argwhere(norms < eps)[0]
        raise ValueError(f"bags patch {j} of image {i} has (near) zero norm and cannot be normalised")
    # Divided in float64 (the ufunc casts block by block) and rounded once into the float32 result.
    return np.divide(arr, norms, out=np.empty(arr.shape, dtype=np.float32), casting="unsafe")


def patch_norms(bags: np.ndarray) -> np.ndarray:
    """L2 norm of every patch ``(..., D) -> (...)``, accumulated in float64.

    Examples
    --------
    >>> patch_norms(np.array([[[3.0, 4.0], [0.0, 0.0]]], dtype=np.float32)).tolist()
    [[5.0, 0.0]]
    """
    arr = np.asarray(bags)
    return np.sqrt(np.einsum("...d,...d->...", arr, arr, dtype=np.float64))

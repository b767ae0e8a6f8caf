"""Feature maps -> bags: 3x3 average pooling, patches in row-major order, unit L2 norm.

Per image: the model's NCHW feature map ``(C, h, w)`` -> 3x3 average pooling
(stride 1, zero padding counted in the mean, as ``torch.nn.AvgPool2d(3, 1,
1)``; skipped when the model already pools) -> ``(h*w, C)`` patches in
row-major ``(h, w)`` order -> each patch scaled to unit L2 norm. A bag is
float32 ``(M = h*w, D = C)``: the image as a bag of patch embeddings
``Z_i = {z_im}, m = 1..M`` (Eq. 1 of Sohn et al., WACV 2023).
"""

from __future__ import annotations

import functools
from concurrent.futures import Executor
from typing import List, Optional, Union

import numpy as np

from ..core.normalize import normalize_patches, patch_norms

__all__ = ["avg_pool3x3", "feature_map_to_patches", "bag_of_feature_map", "bags_of_feature_maps"]


def avg_pool3x3(feature_map: np.ndarray) -> np.ndarray:
    """3x3 average pooling, stride 1, zero padding of 1 counted in the mean.

    Equals ``torch.nn.AvgPool2d(3, stride=1, padding=1)`` (its default
    ``count_include_pad=True``): every output is the sum of its 3x3
    neighbourhood divided by 9, border outputs included. Sums are taken in
    float64.

    Parameters
    ----------
    feature_map : numpy.ndarray, shape (..., h, w)
        Feature maps; the last two axes are pooled.

    Returns
    -------
    numpy.ndarray
        Same shape; float64 for float64 input, else float32.

    Examples
    --------
    >>> avg_pool3x3(np.ones((1, 3, 3)))[0]
    array([[0.44444444, 0.66666667, 0.44444444],
           [0.66666667, 1.        , 0.66666667],
           [0.44444444, 0.66666667, 0.44444444]])
    """
    x = np.asarray(feature_map)
    if x.ndim < 2:
        raise ValueError(f"feature_map must have at least 2 dimensions (..., h, w); got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"feature_map must be a floating-point array; got dtype {x.dtype}")
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    h, w = x.shape[-2:]
    padded = np.zeros(x.shape[:-2] + (h + 2, w + 2), dtype=np.float64)
    padded[..., 1:-1, 1:-1] = x
    rows = padded[..., 0:h, :] + padded[..., 1 : h + 1, :] + padded[..., 2 : h + 2, :]
    total = rows[..., 0:w] + rows[..., 1 : w + 1] + rows[..., 2 : w + 2]
    return (total / 9.0).astype(out_dtype, copy=False)


def feature_map_to_patches(feature_maps: np.ndarray) -> np.ndarray:
    """Reshape NCHW feature maps to patch rows ``(N, h*w, C)``, row-major over (h, w).

    Examples
    --------
    >>> fm = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    >>> feature_map_to_patches(fm)[0, 1].tolist()  # image 0, position (0, 1)
    [1.0, 5.0, 9.0]
    """
    x = np.asarray(feature_maps)
    if x.ndim != 4:
        raise ValueError(f"feature_maps must be 4-D (N, C, h, w); got shape {x.shape}")
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1).reshape(n, h * w, c))


def bag_of_feature_map(feature_map: np.ndarray, *, pool: bool, output: str) -> "Union[np.ndarray, str]":
    """One image's bag ``(M, D)`` from its feature map ``(C, h, w)``, or the reason it has none.

    Parameters
    ----------
    feature_map : numpy.ndarray, shape (C, h, w)
        The model output of one image.
    pool : bool
        Apply :func:`avg_pool3x3` first.
    output : str
        Name of the model output (for the reason).

    Returns
    -------
    numpy.ndarray or str
        float32 unit-norm patches, or a one-line reason when the map is not
        finite or has an all-zero patch (which cannot be normalised).

    Examples
    --------
    >>> bag = bag_of_feature_map(np.ones((2, 1, 2), np.float32), pool=False, output="f")
    >>> bag.shape, bool(np.allclose(np.linalg.norm(bag, axis=1), 1.0))
    ((2, 2), True)
    >>> bag_of_feature_map(np.zeros((2, 1, 1), np.float32), pool=False, output="f")
    '1 of 1 patches have an all-zero feature vector (first: patch 0) and cannot be L2-normalised; try another output or model'
    """
    if not np.isfinite(feature_map).all():
        return f"output {output!r} of the model contains NaN or inf values"
    pooled = avg_pool3x3(feature_map) if pool else feature_map.astype(np.float32, copy=False)
    patches = feature_map_to_patches(pooled[None])
    try:
        return normalize_patches(patches)[0]
    except ValueError:  # a (near) zero patch: say how many, and which first
        zero = np.flatnonzero(patch_norms(patches)[0] < 1e-12)
        if not zero.size:
            raise
        return (
            f"{zero.size} of {patches.shape[1]} patches have an all-zero feature vector (first: patch "
            f"{zero[0]}) and cannot be L2-normalised; try another output or model"
        )


def bags_of_feature_maps(
    feature_maps: np.ndarray, *, pool: bool, output: str, executor: "Optional[Executor]" = None
) -> "List[Union[np.ndarray, str]]":
    """:func:`bag_of_feature_map` of each map of ``(N, C, h, w)``, in order.

    With an ``executor`` the maps are done in its threads (NumPy releases the
    GIL in these array operations); each map's bag is the same either way.

    Examples
    --------
    >>> [b.shape for b in bags_of_feature_maps(np.ones((2, 3, 2, 2), np.float32), pool=True, output="f")]
    [(4, 3), (4, 3)]
    """
    one = functools.partial(bag_of_feature_map, pool=pool, output=output)
    if executor is None or len(feature_maps) < 2:
        return [one(fmap) for fmap in feature_maps]
    return list(executor.map(one, feature_maps))

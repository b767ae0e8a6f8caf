"""Patch-weight heat maps drawn over an image, with Pillow and numpy only.

The weights ``alpha`` of one image live on the feature grid ``(h, w)`` of the
image the model saw. :func:`overlay_weights` scales them to ``[0, 1]`` by
their maximum, upsamples the grid to the image size with Pillow's bilinear
filter, colours it with a 'jet'-like colour map and blends it over the image,
more opaque where the weight is high, so low-weight regions show the image.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image

from ..core.validation import check_finite_array, check_int

__all__ = ["colormap", "model_view", "overlay_weights", "default_heat_range", "heat_levels", "OVERLAY_OPACITY"]

#: Opacity of the heat-map colour where the value is highest.
OVERLAY_OPACITY = 0.6

# 'jet'-like colour map: piecewise linear between these (position, R, G, B) stops.
_STOPS = np.array(
    [
        [0.000, 0.0, 0.0, 0.5],
        [0.125, 0.0, 0.0, 1.0],
        [0.375, 0.0, 1.0, 1.0],
        [0.625, 1.0, 1.0, 0.0],
        [0.875, 1.0, 0.0, 0.0],
        [1.000, 0.5, 0.0, 0.0],
    ]
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in ``[0, 1]`` to RGB colours of a 'jet'-like colour map.

    Parameters
    ----------
    values : array_like
        Any shape; clipped to ``[0, 1]``; NaN is not allowed.

    Returns
    -------
    uint8 array of shape ``values.shape + (3,)``
        Dark blue at 0, cyan, yellow, red, dark red at 1.

    Examples
    --------
    >>> colormap(np.array([0.0, 1.0])).tolist()
    [[0, 0, 128], [128, 0, 0]]
    """
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any():
        raise ValueError("values must not contain NaN")
    v = np.clip(v, 0.0, 1.0)
    rgb = np.stack([np.interp(v, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8)


def model_view(image: Image.Image, *, resize: int = 256, crop: Optional[int] = 224) -> Image.Image:
    """The part of ``image`` the model sees, as a PIL image.

    Same geometry as :func:`anomclust_lite.features.preprocess.preprocess` (shorter side
    resized to ``resize``, centre ``crop x crop`` square; ``crop=None``: the
    whole frame resized to ``resize x resize``), without the normalisation,
    so a feature grid can be drawn over it.

    Examples
    --------
    >>> from PIL import Image
    >>> model_view(Image.new("RGB", (300, 200)), resize=32, crop=16).size
    (16, 16)
    """
    from ..features.preprocess import resize_and_crop

    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image; got {type(image).__name__}")
    return resize_and_crop(image.convert("RGB"), resize=resize, crop=crop)


def overlay_weights(
    image: Image.Image,
    weights: np.ndarray,
    grid: Tuple[int, int],
    *,
    opacity: float = OVERLAY_OPACITY,
) -> Image.Image:
    """Blend a patch-weight heat map over ``image``.

    Parameters
    ----------
    image : PIL.Image.Image
        The image the weights belong to, already cropped like the model input
        (any size; converted to RGB).
    weights : (M,) or (h, w) array_like
        Non-negative patch weights in row-major grid order, ``M = h * w``.
    grid : (int, int)
        The feature grid ``(h, w)``.
    opacity : float, default 0.6
        Opacity of the colour where the weight is largest (0 to 1).

    Returns
    -------
    PIL.Image.Image
        RGB image of ``image.size``.

    Examples
    --------
    >>> from PIL import Image
    >>> im = Image.new("RGB", (32, 32), "gray")
    >>> w = np.zeros((4, 4)); w[0, 0] = 1.0
    >>> out = overlay_weights(im, w, (4, 4))
    >>> out.size, out.getpixel((0, 0)) != out.getpixel((31, 31))
    ((32, 32), True)
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image; got {type(image).__name__}")
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise ValueError(f"grid must be a pair (h, w); got {grid!r}")
    h = check_int(grid[0], "grid[0]", low=1)
    w = check_int(grid[1], "grid[1]", low=1)
    wt = check_finite_array(np.asarray(weights, dtype=np.float64).reshape(-1), "weights", 1)
    if wt.shape[0] != h * w:
        raise ValueError(f"weights must hold h*w={h * w} values for grid {(h, w)}; got {wt.shape[0]}")
    if (wt < 0).any():
        raise ValueError("weights must be non-negative")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity!r}")
    top = float(wt.max())
    level = (wt / top if top > 0 else wt).reshape(h, w).astype(np.float32)
    base = image.convert("RGB")
    up = np.asarray(Image.fromarray(level).resize(base.size, Image.Resampling.BILINEAR), dtype=np.float64)
    up = np.clip(up, 0.0, 1.0)
    colour = colormap(up).astype(np.float64)
    a = (float(opacity) * up)[..., None]
    out = (1.0 - a) * np.asarray(base, dtype=np.float64) + a * colour
    return Image.fromarray(np.round(out).astype(np.uint8))


def default_heat_range(values: np.ndarray) -> "tuple[float, float]":
    """The default one scale for a run's heat maps: the median and the 99.9th percentile of ``values``.

    Most patches of most images are normal, so the median patch score is a
    normal patch (drawn coolest) and only the top 0.1 % of patches reach the
    hottest colour. Returns ``(lo, hi)`` with ``lo < hi``.

    Examples
    --------
    >>> [round(v, 6) for v in default_heat_range(np.arange(1001.0))]
    [500.0, 999.0]
    """
    v = check_finite_array(np.asarray(values, dtype=np.float64).reshape(-1), "values", 1)
    if v.size == 0:
        raise ValueError("values must not be empty")
    lo, hi = (float(x) for x in np.percentile(v, [50.0, 99.9]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def heat_levels(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` on the scale ``lo .. hi`` as uint8 levels 0..255 (clipped at both ends).

    Examples
    --------
    >>> heat_levels(np.array([0.0, 0.5, 1.0, 2.0]), 0.0, 1.0).tolist()
    [0, 128, 255, 255]
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"the heat scale must be finite with lo < hi; got ({lo!r}, {hi!r})")
    v = np.asarray(values, dtype=np.float64)
    return np.round(np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)

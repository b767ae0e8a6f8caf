"""Instance weights: how much each patch counts in an image's weighted average.

Every function returns float32 weights of shape ``(N, M)`` whose rows sum to 1
(computed in float64). The paper's weights are a softmax of the patch scores
(Eq. 5/6 with temperature ``tau``); the baselines are uniform weights (plain
average pooling), hard top-k weights (Eq. 8/9) and weights from ground-truth
defect masks.

A temperature is either absolute, a number in the units of the scores (the
paper's), or *relative*, written ``"<c>x"`` (e.g. ``"0.4x"``): ``c`` times each
image's own standard deviation of its patch scores (:func:`temperatures`).
A relative temperature makes the weights independent of the scale and offset
of an image's scores (``a * s + b`` gives the same weights for any ``a > 0``), so
they do not move when a larger normal bank lowers every score, or with another
backbone.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from .validation import check_finite_array, check_int, check_positive_float

__all__ = ["Tau", "MIN_RELATIVE_TAU", "check_tau", "describe_tau", "scaled_tau", "temperatures", "soft_weights", "topk_weights", "mask_weights",
           "uniform_weights"]

#: A temperature: absolute (a number > 0) or relative (``"<c>x"``, c > 0).
Tau = Union[float, str]
#: A relative temperature is never below this (an image whose patch scores are all equal).
MIN_RELATIVE_TAU = 1e-6


def check_tau(tau: object, name: str = "tau") -> Tau:
    """``tau`` checked: a positive finite number (float), or ``"<c>x"`` with ``c`` positive (canonical ``f"{c:g}x"``).

    Examples
    --------
    >>> check_tau(0.02), check_tau("0.40x"), check_tau(" 1X ")
    (0.02, '0.4x', '1x')
    """
    if isinstance(tau, str):
        text = tau.strip().lower()
        try:
            factor = float(text[:-1]) if text.endswith("x") else math.nan
        except ValueError:
            factor = math.nan
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"{name} must be a positive number (patch-distance units) or '<c>x' with c > 0 "
                             f"(c times each image's patch-score standard deviation), e.g. 0.02 or '0.4x'; got {tau!r}")
        return f"{factor:g}x"
    return check_positive_float(tau, name)


def describe_tau(tau: Tau) -> str:
    """``tau`` in words for a report line.

    Examples
    --------
    >>> describe_tau(0.02), describe_tau("0.4x")
    ('0.02', "0.4x (0.4 x each image's patch-score std)")
    """
    t = check_tau(tau)
    return f"{t:g}" if isinstance(t, float) else f"{t} ({t[:-1]} x each image's patch-score std)"


def scaled_tau(tau: Tau, factor: float) -> Tau:
    """``tau`` times ``factor``, in the same form (a number, or ``"<c>x"``).

    Examples
    --------
    >>> scaled_tau(0.02, 1.25), scaled_tau("0.4x", 0.75)
    (0.025, '0.3x')
    """
    t = check_tau(tau)
    f = check_positive_float(factor, "factor")
    return t * f if isinstance(t, float) else check_tau(f"{float(t[:-1]) * f!r}x")


def temperatures(scores: np.ndarray, tau: Tau) -> np.ndarray:
    """Every image's temperature, ``(N, 1)`` float64: ``tau`` itself, or ``c`` x the image's score std for ``"<c>x"``.

    A relative temperature is at least :data:`MIN_RELATIVE_TAU`.

    Examples
    --------
    >>> temperatures(np.array([[0.0, 1.0], [0.0, 0.2]]), "0.5x").ravel().tolist()
    [0.25, 0.05]
    >>> temperatures(np.array([[0.0, 1.0]]), 0.1).ravel().tolist()
    [0.1]
    """
    return _temperatures(_check_scores(scores), tau)


def _temperatures(s: np.ndarray, tau: Tau) -> np.ndarray:
    """:func:`temperatures` of scores ``s`` already checked by :func:`_check_scores`."""
    t = check_tau(tau)
    if isinstance(t, float):
        return np.full((s.shape[0], 1), t)
    std = np.std(s, axis=1, dtype=np.float64, keepdims=True)
    return np.maximum(float(t[:-1]) * std, MIN_RELATIVE_TAU)


def _check_scores(scores: object) -> np.ndarray:
    arr = check_finite_array(scores, "scores", 2)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"scores must have at least one image and one patch; got shape {arr.shape}")
    return arr


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    """Row softmax of a float64 array; ``-inf`` entries get weight 0."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def soft_weights(scores: np.ndarray, tau: Tau) -> np.ndarray:
    """Softmax weights ``alpha_im ∝ exp(score_im / tau)`` (Eq. 5 and 6).

    The maximum is subtracted before exponentiating, so any ``tau`` from
    1e-4 up to 1e6 (and beyond) is stable: small ``tau`` puts all weight on
    the highest-scoring patch (shared equally among exact ties), large
    ``tau`` tends to uniform weights (average pooling).

    Parameters
    ----------
    scores : ndarray, shape (N, M)
        Patch anomaly scores, e.g. from :func:`anomclust_lite.patch_scores`.
    tau : float or str
        Temperature > 0, in the units of the scores (patch distances of
        unit vectors lie in ``[0, 2]``), or ``"<c>x"``: relative to each
        image's score spread (:func:`temperatures`).

    Returns
    -------
    ndarray, shape (N, M), float32
        Rows sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import soft_weights
    >>> soft_weights(np.array([[0.0, 1.0]]), tau=1e-4).round(3).tolist()
    [[0.0, 1.0]]
    """
    s = _check_scores(scores)
    return _softmax_rows(s / _temperatures(s, tau)).astype(np.float32)


def topk_weights(scores: np.ndarray, k: int, tau: Optional[Tau] = None) -> np.ndarray:
    """Weights restricted to the ``k`` highest-scoring patches of each image.

    Without ``tau``: uniform over the top ``k`` (Eq. 8); with ``tau``: a
    softmax of the scores restricted to the top ``k`` (Eq. 9). Ties at the
    k-th score are broken by the lower patch index, so results are
    deterministic.

    Parameters
    ----------
    scores : ndarray, shape (N, M)
    k : int
        Number of patches kept, ``1 <= k <= M``.
    tau : float or str, optional
        Temperature of the restricted softmax, as in :func:`soft_weights`
        (a relative one is taken from the spread of all the image's scores).

    Returns
    -------
    ndarray, shape (N, M), float32

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import topk_weights
    >>> topk_weights(np.array([[0.1, 0.9, 0.5, 0.2]]), k=2).tolist()
    [[0.0, 0.5, 0.5, 0.0]]
    """
    s = _check_scores(scores)
    kk = check_int(k, "k", low=1, high=s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
    keep = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=1)
    if tau is None:
        return (keep / kk).astype(np.float32)
    z = np.where(keep, s / _temperatures(s, tau), -np.inf)
    return _softmax_rows(z).astype(np.float32)


def uniform_weights(n: int, m: int) -> np.ndarray:
    """Uniform weights ``1 / m`` (the weighted average becomes average pooling).

    Examples
    --------
    >>> from anomclust_lite import uniform_weights
    >>> uniform_weights(1, 4).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    nn = check_int(n, "n", low=1)
    mm = check_int(m, "m", low=1)
    return np.full((nn, mm), 1.0 / mm, dtype=np.float32)


def mask_weights(cells: np.ndarray) -> np.ndarray:
    """Weights from ground-truth defect masks on the patch grid (the paper's oracle baseline).

    Each row of defect fractions (the share of defect pixels in every patch
    cell, e.g. from :func:`anomclust_lite.datasets.mask_cells`) is normalised
    to sum to 1; an empty mask (a normal image) gives uniform weights.

    Parameters
    ----------
    cells : ndarray, shape (N, h, w) or (N, M)
        Non-negative defect fractions per patch cell, ``M = h * w`` in
        row-major order.

    Returns
    -------
    ndarray, shape (N, M), float32

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import mask_weights
    >>> mask_weights(np.array([[[0.5, 0.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])).tolist()
    [[0.5, 0.0, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]]
    """
    arr = np.asarray(cells, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or arr[0].size < 1:
        raise ValueError(
            f"masks must be defect fractions on the patch grid, shape (N, h, w) or (N, M) with N, M >= 1; "
            f"got shape {arr.shape} (resize full-size masks with anomclust_lite.datasets.mask_cells)"
        )
    flat = arr.reshape(arr.shape[0], -1)
    if not np.isfinite(flat).all() or (flat < 0).any():
        raise ValueError("masks must hold finite, non-negative defect fractions")
    total = flat.sum(axis=1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    out = np.where(total > 0, flat / safe, 1.0 / flat.shape[1])
    return out.astype(np.float32)

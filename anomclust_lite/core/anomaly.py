"""Image anomaly scores and thresholds calibrated on reference scores.

An image's anomaly score summarises its patch scores (unsupervised: against
the other images, Eq. 5; semi-supervised: against labelled normal images,
Eq. 6): the mean of its ``topk`` highest patch scores. A defect covers a few
patches, so the image score follows its worst patches; averaging a handful
of them instead of taking the single maximum makes it less sensitive to one
noisy patch (``topk=1`` is the maximum).

A threshold is *calibrated* on reference scores that are known to be of the
accepted kind (for example leave-one-out scores of the labelled normal
images): :func:`calibrated_threshold` returns the reference score that a new
accepted image's score exceeds with probability at most ``rate`` (the
split-conformal quantile: with ``n`` reference scores, the one that
``floor(rate * (n + 1)) - 1`` of them exceed). Taking the plain ``1 - rate``
quantile instead lets a new image through more often than stated: with 20
reference scores at 5 %, the second largest, which a new score exceeds with
probability 2/21 = 9.5 %.
"""

from __future__ import annotations

import math

import numpy as np

from .validation import check_finite_array, check_int

__all__ = ["DEFAULT_IMAGE_TOPK", "DEFAULT_RATE", "image_scores", "calibrated_threshold", "check_rate"]

#: Patches averaged into an image score (of 784 for a 28 x 28 grid: the worst 1 %).
DEFAULT_IMAGE_TOPK = 8
#: Default rate of calibrated thresholds: false rejects of normal images, false flags of new types.
DEFAULT_RATE = 0.05


def check_rate(rate: object, name: str = "rate") -> float:
    """A rate in [0, 1), as float; raises ValueError naming ``name`` otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1); got {rate!r}")
    value = float(rate)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1) (a fraction, e.g. 0.05 for 5 %); got {rate!r}")
    return value


def image_scores(patch_scores: np.ndarray, *, topk: int = DEFAULT_IMAGE_TOPK) -> np.ndarray:
    """Anomaly score of every image: the mean of its ``topk`` highest patch scores.

    Parameters
    ----------
    patch_scores : (N, M) array_like
        Patch anomaly scores (higher = more anomalous).
    topk : int, default 8
        Patches averaged; clipped to ``M``. ``1`` gives the maximum.

    Returns
    -------
    (N,) float64

    Examples
    --------
    >>> image_scores([[0.1, 0.9, 0.5], [0.2, 0.2, 0.3]], topk=2).round(2)
    array([0.7 , 0.25])
    """
    s = check_finite_array(patch_scores, "patch_scores", 2)
    k = min(check_int(topk, "topk", low=1), s.shape[1])
    if s.shape[1] == 0:
        raise ValueError("patch_scores must have at least one patch per image")
    top = np.partition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k:]
    # Sorted, then summed strictly in that order (cumsum): the result depends neither on the patches'
    # order nor on where the row sits in memory (numpy's pairwise, vectorised mean does, by an ulp).
    return np.sort(top.astype(np.float64), axis=1).cumsum(axis=1)[:, -1] / k


def calibrated_threshold(reference_scores: np.ndarray, rate: float = DEFAULT_RATE) -> float:
    """The reference score that a new score, exchangeable with the reference scores, exceeds with probability at most ``rate``.

    It is the reference score that ``j = floor(rate * (n + 1)) - 1`` of the
    ``n`` reference scores exceed (the split-conformal quantile): a new score
    exceeds it with probability ``(j + 1) / (n + 1) <= rate``. When ``n`` is
    too small for that (``n + 1 < 1 / rate``: fewer than 19 at 5 %) it is the
    largest reference score, exceeded with probability ``1 / (n + 1)``. At
    most a fraction ``rate`` of the reference scores exceed it, and it does
    not increase when ``rate`` grows. ``rate=0`` gives the largest.

    Parameters
    ----------
    reference_scores : (n,) array_like
        Scores of images known to be acceptable (e.g. leave-one-out scores).
    rate : float in [0, 1)
        Probability with which a new acceptable image may be rejected.

    Returns
    -------
    float

    Examples
    --------
    >>> calibrated_threshold([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.2)  # 2/11 <= 0.2
    9.0
    >>> calibrated_threshold(np.arange(1.0, 40.0), 0.05)  # 39 scores: 2/40 = 5 %
    38.0
    >>> calibrated_threshold([1.0, 2.0, 3.0], 0.0)
    3.0
    """
    s = np.asarray(reference_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.isfinite(s).all():
        raise ValueError(f"reference_scores must be a non-empty 1-D array of finite numbers; got shape {s.shape}")
    r = check_rate(rate)
    above = min(max(math.floor(r * (s.size + 1) + 1e-9) - 1, 0), s.size - 1)
    return float(np.sort(s)[::-1][above])

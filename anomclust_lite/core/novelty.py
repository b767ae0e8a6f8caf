"""Novelty of assigned images: how unlike anything the model was fitted on.

An image of a defect type the model has not seen is far from the fitted
images in two complementary ways (measured with the leave-one-type-out
protocol, see BENCHMARKS.md): its WA embedding is far from every fitted
image's embedding (this catches a new type that resembles no cluster as a
whole), and its most anomalous patches are far from every patch of the fitted
images (this catches a new kind of local damage). Each part is divided by its
typical value among the fitted images (the median of their leave-one-out
values), and the novelty is the geometric mean of the two parts:

    novelty = sqrt( (e / median_e) * (p / median_p) )

so a typical fitted image has novelty about 1.

An image is flagged as a *new type* when its novelty exceeds the threshold of
the cluster it was assigned to: the threshold calibrated
(:func:`anomclust_lite.core.anomaly.calibrated_threshold`) on the
leave-one-out novelty of that cluster's fitted images at the stated
false-flag rate (default 5 %): a new image like them is flagged with at most
that probability. "That cluster's fitted images" are those that assigning
would put there (:func:`calibration_labels`: the nearest centre, the image's
own cluster's centre taken without it), not the clustering's members: a member
helped to form its cluster and sits nearer its centre than a new image of the
same kind, so calibrating on the members ran pill at 8.3 % false flags at a
stated 5 % (now 5.3 %; BENCHMARKS.md "Calibration sets that match the
assignment"). A cluster of fewer than :data:`MIN_OWN_CALIBRATION`
fitted images cannot promise 5 % on its own (even its largest value is
exceeded by a new image of the same kind with probability ``1 / (n + 1)``:
10 % for 9 images), so it takes the threshold
calibrated on every fitted image's novelty (BENCHMARKS.md "Trust signals":
false flags on bottle's small clusters 12-13 % -> 5-6 %, recall -0.009 on
average).
"""

from __future__ import annotations

import numpy as np

from .anomaly import DEFAULT_RATE, calibrated_threshold, check_rate
from .distances import squared_distances_to
from .validation import check_cluster_ids, check_clustered, check_finite_array, check_int

__all__ = ["MIN_OWN_CALIBRATION", "nearest_distances", "novelty_scores", "calibration_labels", "cluster_thresholds",
           "flag_new_types"]

#: Fitted images a cluster needs to calibrate its own new-type threshold (fewer: the pooled one).
#: 20 is the fewest for which a 5 % threshold can be promised (1/21; 19 is the bare minimum). Fixed,
#: not derived from the rate, so that every threshold stays non-increasing in the rate.
MIN_OWN_CALIBRATION = 20
#: Bytes of one block of :func:`nearest_distances`' ``(rows, P)`` float64 distance matrix.
_BLOCK_BYTES = 16 << 20


def nearest_distances(queries: np.ndarray, points: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
    """Euclidean distance of every query to its nearest point.

    Parameters
    ----------
    queries : (N, D) array_like
    points : (P, D) array_like
    leave_one_out : bool, default False
        ``queries`` are ``points`` themselves (same rows, same order); each
        one's own row is skipped, so the result is its distance to the
        nearest *other* point. Needs ``P >= 2``.

    Returns
    -------
    (N,) float64

    Examples
    --------
    >>> nearest_distances([[0.0], [3.0]], [[1.0], [5.0]])
    array([1., 2.])
    >>> nearest_distances([[0.0], [1.0], [5.0]], [[0.0], [1.0], [5.0]], leave_one_out=True)
    array([1., 1., 4.])
    """
    q = check_finite_array(queries, "queries", 2)
    p = check_finite_array(points, "points", 2)
    if p.shape[0] < (2 if leave_one_out else 1) or p.shape[1] != q.shape[1]:
        raise ValueError(f"points must be (P, {q.shape[1]}) with P >= {2 if leave_one_out else 1}; got {p.shape}")
    if leave_one_out and q.shape != p.shape:
        raise ValueError(f"leave_one_out needs queries and points to be the same rows; got {q.shape} and {p.shape}")
    out = np.empty(q.shape[0])
    p64 = np.asarray(p, dtype=np.float64)
    p_sq = np.einsum("ij,ij->i", p64, p64)
    step = max(1, _BLOCK_BYTES // (8 * p64.shape[0]))
    for start in range(0, q.shape[0], step):
        block = np.asarray(q[start:start + step], dtype=np.float64)
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product, (rows, P) float64 beside the inputs
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + p_sq[None, :] - 2.0 * (block @ p64.T)
        if leave_one_out:
            rows = np.arange(block.shape[0])
            d2[rows, start + rows] = np.inf
        out[start:start + block.shape[0]] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def novelty_scores(
    embedding_distances: np.ndarray,
    patch_distances: np.ndarray,
    embedding_scale: float,
    patch_scale: float,
) -> np.ndarray:
    """Geometric mean of the two novelty parts, each divided by its scale.

    Parameters
    ----------
    embedding_distances : (N,) array_like
        Distance of each image's embedding to the nearest fitted embedding.
    patch_distances : (N,) array_like
        Image score of each image's distances to the nearest fitted patch.
    embedding_scale, patch_scale : float
        Typical values of the two parts among the fitted images (> 0).

    Returns
    -------
    (N,) float64, >= 0

    Examples
    --------
    >>> novelty_scores([1.0, 4.0], [2.0, 2.0], 1.0, 2.0)
    array([1., 2.])
    """
    e = check_finite_array(embedding_distances, "embedding_distances", 1)
    p = check_finite_array(patch_distances, "patch_distances", 1)
    if e.shape != p.shape or (e < 0).any() or (p < 0).any():
        raise ValueError(f"embedding_distances and patch_distances must be non-negative, one per image; got {e.shape}, {p.shape}")
    scales = np.array([embedding_scale, patch_scale], dtype=np.float64)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise ValueError(f"embedding_scale and patch_scale must be finite and > 0; got {embedding_scale!r}, {patch_scale!r}")
    return np.sqrt((e / scales[0]) * (p / scales[1]))


def calibration_labels(embeddings: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The cluster each fitted image would be assigned to as a new image: its nearest centre, with its own
    cluster's centre (the mean of its members) recomputed without it.

    Parameters
    ----------
    embeddings : (N, D) array_like
        Embeddings of the fitted images (those clustered).
    labels : (N,) int array_like
        Their clusters, ``0..K-1``.
    centers : (K, D) array_like
        Mean embedding of every cluster's members.

    Returns
    -------
    (N,) int64: a cluster per image; a cluster of one image has no centre without it.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.6], [3.0], [5.0]])
    >>> calibration_labels(x, [0, 0, 0, 1, 1], np.array([[1.2], [4.0]])).tolist()
    [0, 0, 1, 0, 1]

    Without itself, 2.6's cluster has its centre at 0.5 (4.0 is nearer), and 3.0's at 5.0 (1.2 is nearer).
    """
    emb, cen, lab = check_clustered(embeddings, centers, labels)
    n = np.bincount(lab, minlength=cen.shape[0]).astype(np.float64)[lab]
    own = (n[:, None] * cen[lab] - emb) / np.maximum(n - 1.0, 1.0)[:, None]
    d2 = squared_distances_to(emb, cen)
    d2[np.arange(lab.size), lab] = np.where(n > 1, ((emb - own) ** 2).sum(axis=1), np.inf)
    return np.argmin(d2, axis=1)  # one cluster: its column, even at inf


def cluster_thresholds(loo_novelty: np.ndarray, labels: np.ndarray, k: int, rate: float = DEFAULT_RATE) -> np.ndarray:
    """New-type threshold of every cluster, calibrated on its fitted images' leave-one-out novelty.

    A cluster of fewer than :data:`MIN_OWN_CALIBRATION` images (none
    included) gets the threshold calibrated on all ``N`` images instead (see
    the module docstring).

    Parameters
    ----------
    loo_novelty : (N,) array_like
        Leave-one-out novelty of every fitted image.
    labels : (N,) int array_like
        The cluster each fitted image calibrates, ``0..k-1`` (:func:`calibration_labels`).
    k : int
        Number of clusters.
    rate : float in [0, 1), default 0.05
        Probability with which a new image like the cluster's own images
        exceeds its threshold (:func:`~anomclust_lite.core.anomaly.calibrated_threshold`).
        Thresholds do not increase when ``rate`` grows.

    Returns
    -------
    (k,) float64

    Examples
    --------
    >>> loo = np.r_[np.linspace(1.0, 2.0, 40), [0.5, 9.0]]
    >>> cluster_thresholds(loo, [0] * 40 + [1, 1], 2, 0.05)  # cluster 1: 2 images, the pooled 5 % threshold
    array([1.97435897, 2.        ])
    """
    nov = check_finite_array(loo_novelty, "loo_novelty", 1)
    kk = check_int(k, "k", low=1)
    lab = check_cluster_ids(labels, nov.size, kk)
    counts = np.bincount(lab, minlength=kk)
    r = check_rate(rate)
    pooled = calibrated_threshold(nov, r)
    return np.array([calibrated_threshold(nov[lab == c], r) if counts[c] >= MIN_OWN_CALIBRATION else pooled
                     for c in range(kk)])


def flag_new_types(novelty: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, is_good: np.ndarray) -> np.ndarray:
    """``novelty > thresholds[labels]``, never for images in the good group.

    Examples
    --------
    >>> flag_new_types([2.0, 2.0, 0.5], [0, 0, 1], [1.0, 1.0], [False, True, False])
    array([ True, False, False])
    """
    nov = check_finite_array(novelty, "novelty", 1)
    thr = check_finite_array(thresholds, "thresholds", 1)
    lab = np.asarray(labels)
    good = np.asarray(is_good, dtype=bool)
    if lab.shape != nov.shape or good.shape != nov.shape:
        raise ValueError(f"labels and is_good must have one entry per image ({nov.size}); got {lab.shape}, {good.shape}")
    return (nov > thr[lab]) & ~good

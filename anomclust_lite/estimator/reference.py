"""What a fitted model keeps to weight new images, and the hashes that recognise fitted images.

The weights of a new image need anomaly scores, computed against what the
model stores (float16):

- unsupervised scoring and novelty: a seeded subsample of ``reference_size``
  fitted images (all of them when fewer; :func:`seeded_images`), chosen
  before and independently of the clustering, so every K and method shares
  it (and its cached novelty calibration); at the defaults it is the same
  subsample as Eq. 7's reference from ``subsample_from`` images on, so new
  images are scored against the images the fit scored against;
- semi-supervised scoring: the coreset of the labelled normal patches the fit
  scored against (as rows of patches), also the bank of the image anomaly
  scores; with ``exact`` (or when the coreset keeps every patch) a seeded
  subsample of ``reference_size`` whole labelled normal images (all of them
  when fewer). Novelty then has its own reference, the same seeded fitted
  images as above, kept as a coreset of ``bank_size`` of their patches
  (whole with ``exact``; see :func:`~anomclust_lite.estimator.fitting.fit_bags`).

An image whose float16 features hash like a fitted image's is that image.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import numpy as np

__all__ = ["HASH_BYTES", "REFERENCE_KINDS", "bag_hashes", "seeded_images", "build_reference", "normal_bank"]

#: Bytes of every bag's BLAKE2b digest.
HASH_BYTES = 16
#: ``"images"``: fitted images' bags (unsupervised scores); ``"normal-patches"``: labelled normal patches.
REFERENCE_KINDS = ("images", "normal-patches")


def bag_hashes(bags: np.ndarray) -> np.ndarray:
    """(N, 16) uint8 digests of each bag's float16 features."""
    out = np.empty((bags.shape[0], HASH_BYTES), dtype=np.uint8)
    for i in range(bags.shape[0]):
        digest = hashlib.blake2b(np.ascontiguousarray(bags[i], dtype=np.float16).tobytes(), digest_size=HASH_BYTES)
        out[i] = np.frombuffer(digest.digest(), dtype=np.uint8)
    return out


def build_reference(bags: np.ndarray, bank: Optional[np.ndarray], ref_idx: np.ndarray) -> Tuple[np.ndarray, str]:
    """The float16 reference bags stored with a model, and their kind (one of :data:`REFERENCE_KINDS`).

    ``bank``: the normal bank the fit's anomaly scores were taken against
    (the coreset's rows, or :func:`normal_bank`), None without normal images.
    ``ref_idx``: the fitted images kept for unsupervised scoring
    (:func:`seeded_images`).
    """
    if bank is None:
        return bags[ref_idx].astype(np.float16), "images"
    return bank.astype(np.float16), "normal-patches"


def seeded_images(n: int, reference_size: int, seed: int) -> np.ndarray:
    """Positions of at most ``reference_size`` of ``n`` images (a seeded subsample, ascending; all when fewer).

    :func:`~anomclust_lite.estimator.fitting.score_reference` draws Eq. 7's reference with it,
    so the two are the same images when the two sizes are equal.

    Examples
    --------
    >>> seeded_images(3, 64, 0).tolist(), len(seeded_images(1000, 64, 0))
    ([0, 1, 2], 64)
    """
    if n <= reference_size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=reference_size, replace=False))


def normal_bank(normals: np.ndarray, reference_size: int, seed: int) -> np.ndarray:
    """At most ``reference_size`` whole normal images (:func:`seeded_images`), float16.

    Whole images, so that each one's score against the others (leave one
    out) calibrates the good group's threshold.
    """
    if normals.shape[0] > reference_size:
        normals = normals[seeded_images(normals.shape[0], reference_size, seed)]
    return normals.astype(np.float16)

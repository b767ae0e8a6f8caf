"""What a fitted model keeps to weight new images, and the hashes that recognise fitted images.

The weights of a new image need anomaly scores, computed against what the
model stores (float16):

- unsupervised scoring: a seeded subsample of ``reference_size`` fitted
  images' bags (all of them when fewer);
- semi-supervised scoring: a seeded subsample of the labelled normal patches,
  at most ``reference_size * M`` of them, grouped as bags of ``M`` patches.

An image whose float16 features hash like a fitted image's is that image.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import numpy as np

__all__ = ["HASH_BYTES", "REFERENCE_KINDS", "bag_hashes", "build_reference"]

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


def build_reference(
    bags: np.ndarray, normals: Optional[np.ndarray], reference_size: int, seed: int
) -> Tuple[np.ndarray, str]:
    """The float16 reference bags stored with a model, and their kind (one of :data:`REFERENCE_KINDS`)."""
    rng = np.random.default_rng(seed)
    if normals is None:
        n = bags.shape[0]
        ref_idx = np.sort(rng.choice(n, size=min(n, reference_size), replace=False))
        return bags[ref_idx].astype(np.float16), "images"
    return _normal_bank(normals, bags.shape[1], reference_size, rng), "normal-patches"


def _normal_bank(normals: np.ndarray, m: int, reference_size: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``reference_size * m`` normal patches, grouped as bags of ``m`` patches, float16."""
    flat = normals.reshape(-1, normals.shape[2])
    cap = reference_size * m
    if flat.shape[0] > cap:
        flat = flat[np.sort(rng.choice(flat.shape[0], size=cap, replace=False))]
        return flat.reshape(reference_size, m, -1).astype(np.float16)
    return normals.astype(np.float16)

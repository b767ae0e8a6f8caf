"""Nuisance projection: the dominant directions of the patches, removed from the WA embeddings.

Most patches of inspection images show the good part: their largest
variation (position on the part, lighting, background, the part's own
texture) is the same for every defect type, and a weighted average keeps
some of it however sharp the weights are. Removing the top ``r`` principal
directions of the clustered images' patches from every WA embedding leaves
the directions in which the defects differ:

    e' = e - (e - mu) V_r^T V_r

with ``mu`` the mean patch and ``V_r`` (``r x D``, orthonormal rows) the
leading eigenvectors of the patches' covariance. As the weights of an image
sum to one, this equals removing the directions from every patch before
averaging. It is not in the paper (``r = 0`` is the paper's method); the
measurements that chose the default ``r`` are in BENCHMARKS.md
("Nuisance projection").

The covariance is accumulated in float64, one image at a time, over every
image (a fixed, evenly spaced subset of patch positions when a bag has more
than :data:`MAX_POSITIONS`, and at most :data:`MAX_IMAGES` images, evenly
spaced), so the result does not depend on the memory budget and its working
memory is ``MAX_POSITIONS x D`` float64 beside the ``D x D`` sums; the image
order changes it only by floating-point rounding. Cost: about
``min(N, MAX_IMAGES) x min(M, MAX_POSITIONS) x D^2`` multiply-adds (one to two
seconds for 2,000 images at D = 512 on two cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .defaults import DEFAULT_PROJECT_OUT
from .validation import check_int

__all__ = ["MAX_POSITIONS", "MAX_IMAGES", "Projection", "auto_rank", "projection_rank", "identity_projection",
           "nuisance_projection"]

#: Patch positions per image that enter the covariance (evenly spaced beyond this).
MAX_POSITIONS = 256
#: Images that enter the covariance (evenly spaced beyond this).
MAX_IMAGES = 2000


@dataclass(frozen=True)
class Projection:
    """Removes ``components`` (``(r, D)``, orthonormal rows) around ``mean`` (``(D,)``) from embeddings.

    Examples
    --------
    >>> p = Projection(np.zeros(2), np.array([[1.0, 0.0]]))
    >>> p.apply(np.array([[3.0, 4.0]]))
    array([[0., 4.]])
    """

    mean: np.ndarray
    components: np.ndarray

    @property
    def rank(self) -> int:
        """Number of directions removed (0: the identity)."""
        return int(self.components.shape[0])

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """``embeddings`` (``(N, D)``) without the components, float64 (the input itself when ``rank`` is 0)."""
        if self.rank == 0:
            return embeddings
        e = np.asarray(embeddings, dtype=np.float64)
        return e - ((e - self.mean) @ self.components.T) @ self.components


def identity_projection(dim: int) -> Projection:
    """The projection that removes nothing (``r = 0``, the paper's method) in ``dim`` dimensions."""
    d = check_int(dim, "dim", low=1)
    return Projection(np.zeros(d), np.zeros((0, d)))


def auto_rank(dim: int, most: int) -> int:
    """Directions ``project_out="auto"`` removes in ``dim`` dimensions: ``min(most, dim // 16)``.

    Examples
    --------
    >>> auto_rank(512, 8), auto_rank(128, 8), auto_rank(64, 8), auto_rank(12, 8)
    (8, 8, 4, 0)
    """
    return min(int(most), int(dim) // 16)


def projection_rank(project_out: object, dim: int) -> int:
    """Directions ``project_out`` removes from ``dim``-dimensional embeddings.

    ``"auto"``: :func:`auto_rank` with :data:`~anomclust_lite.core.defaults.DEFAULT_PROJECT_OUT`;
    an integer: itself, which must be below ``dim``.

    Examples
    --------
    >>> projection_rank("auto", 512), projection_rank("auto", 64), projection_rank(3, 512)
    (8, 4, 3)
    """
    if project_out == "auto":
        return auto_rank(dim, DEFAULT_PROJECT_OUT)
    rank = check_int(project_out, "project_out", low=0)
    if rank >= dim:
        raise ValueError(f"project_out={rank} must be below the feature dimension {dim}; "
                         "choose fewer directions, or 0 to keep all")
    return rank


def _positions(m: int) -> np.ndarray:
    return np.unique(np.linspace(0, m - 1, min(m, MAX_POSITIONS)).round().astype(np.int64))


def nuisance_projection(bags: np.ndarray, rank: int) -> Projection:
    """The top ``rank`` principal directions of the patches of ``bags`` (``(N, M, D)``), as a :class:`Projection`.

    Parameters
    ----------
    bags : (N, M, D) array_like (a memory map is read in chunks)
        Patch embeddings of the clustered images.
    rank : int
        Directions to remove, ``0 <= rank < D``; 0 gives the identity.

    Returns
    -------
    Projection

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bags = rng.normal(size=(6, 40, 3)) * np.array([5.0, 1.0, 0.1])
    >>> p = nuisance_projection(bags, 1)
    >>> bool(abs(abs(p.components[0, 0]) - 1) < 0.01)
    True
    """
    if np.ndim(bags) != 3:
        raise ValueError(f"bags must be a 3-D array (images, patches, dims); got shape {np.shape(bags)}")
    n, m, d = np.shape(bags)
    r = check_int(rank, "rank", low=0)
    if r >= d:
        raise ValueError(f"rank (project_out) must be below the feature dimension {d}; got {r}")
    if r == 0:
        return identity_projection(d)
    images = np.unique(np.linspace(0, n - 1, min(n, MAX_IMAGES)).round().astype(np.int64))
    pos = _positions(m)
    total, outer = np.zeros(d), np.zeros((d, d))
    for i in images:  # one image at a time: at most MAX_POSITIONS x D float64 beside the (D, D) sums
        patches = np.asarray(bags[i])[pos].astype(np.float64)
        if not np.isfinite(patches).all():
            raise ValueError(f"bags[{i}] has NaN or inf values; the features must be finite")
        total += patches.sum(axis=0)
        outer += patches.T @ patches
    count = images.size * pos.size
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    top = vectors[:, np.argsort(values)[::-1][:r]].T
    return Projection(mean, np.ascontiguousarray(top))

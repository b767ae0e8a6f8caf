"""Hausdorff-family distances between bags of patches (Appendix C of the paper).

With ``d(a, b)`` the Euclidean patch distance, the directed inner distances
from bag X to bag Y are

- ``"max-min"``:  ``max_x min_y d(x, y)`` (the classic directed Hausdorff;
  Eq. 4 of Sohn et al.: a WA embedding whose weight is all on the patch of
  highest ``aggregate="max"`` score recovers it),
- ``"mean-min"``: ``mean_x min_y d(x, y)``,

combined over the two directions by ``outer="max"`` or ``outer="mean"``; the
symmetric inners ignore ``outer``:

- ``"min-min"``:  ``min_x min_y d(x, y)``,
- ``"mean-mean"``: ``mean_x mean_y d(x, y)``.

``inner="max-min", outer="max"`` is the max-Hausdorff distance, the paper's
strongest bag-distance baseline. All variants run on the same blocked kernel
as :func:`anomclust_lite.patch_scores`: one SGEMM per unordered image pair.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .kernel import block_reductions, sims_to_dists
from .validation import check_bags, check_choice, check_memory_mb, check_n_threads
from .defaults import DEFAULT_MEMORY_MB

__all__ = ["HAUSDORFF_INNER", "HAUSDORFF_OUTER", "hausdorff_distances", "directed_distances", "symmetrise"]

HAUSDORFF_INNER = ("max-min", "mean-min", "min-min", "mean-mean")
HAUSDORFF_OUTER = ("max", "mean")


def directed_distances(sims: np.ndarray, inner: str) -> np.ndarray:
    """``(a, b)`` directed distances from best-match similarities ``sims (a, M, b)``.

    ``sims[i, m, j]`` is the similarity of patch ``m`` of bag ``i`` to its
    nearest patch of bag ``j``; ``inner`` is ``"max-min"``, ``"mean-min"`` or
    ``"min-min"`` (``"mean-mean"`` needs all patch pairs, not best matches).
    """
    if inner == "max-min":
        return sims_to_dists(sims.min(axis=1))
    if inner == "mean-min":
        return sims_to_dists(sims).mean(axis=1, dtype=np.float64)
    # min-min: the closest pair overall.
    return sims_to_dists(sims.max(axis=1))


def symmetrise(directed: np.ndarray, inner: str, outer: str) -> np.ndarray:
    """Combine ``directed[i, j]`` (bag i to bag j) with its transpose by ``outer``; zero diagonal.

    The symmetric inners (``"min-min"``, ``"mean-mean"``) are averaged,
    which only evens out rounding.
    """
    if inner in ("max-min", "mean-min") and outer == "max":
        sym = np.maximum(directed, directed.T)
    else:
        sym = 0.5 * (directed + directed.T)
    np.fill_diagonal(sym, 0.0)
    return sym


def hausdorff_distances(
    bags: np.ndarray,
    *,
    inner: str = "max-min",
    outer: str = "max",
    memory_mb: float = DEFAULT_MEMORY_MB,
    n_threads: Optional[int] = None,
) -> np.ndarray:
    """Pairwise Hausdorff-family distances between bags.

    Parameters
    ----------
    bags : ndarray, shape (N, M, D)
        Unit-norm patch embeddings.
    inner : {"max-min", "mean-min", "min-min", "mean-mean"}
        The set-to-set distance; see the module docstring.
    outer : {"max", "mean"}
        How the two directed distances are combined; ignored for the
        symmetric inners ``"min-min"`` and ``"mean-mean"``.
    memory_mb : float
        Working-memory budget of the kernel in MiB.
    n_threads : int, optional
        CPU threads of the kernel (the BLAS included); default one per
        available CPU. Results do not depend on it.

    Returns
    -------
    ndarray, shape (N, N), float64
        Symmetric with a zero diagonal. ``"mean-mean"`` is not a metric
        (the mean distance of a bag to itself is positive); its diagonal is
        set to 0 so that the matrix can be clustered.

    Examples
    --------
    >>> import numpy as np
    >>> from anomclust_lite import hausdorff_distances, normalize_patches
    >>> bags = normalize_patches(np.random.default_rng(0).normal(size=(4, 6, 3)))
    >>> d = hausdorff_distances(bags)
    >>> bool(np.allclose(d, d.T)), float(d[0, 0])
    (True, 0.0)
    """
    arr = check_bags(bags, "bags", min_images=1)
    check_choice(inner, "inner", HAUSDORFF_INNER)
    check_choice(outer, "outer", HAUSDORFF_OUTER)
    mem = check_memory_mb(memory_mb)
    nt = check_n_threads(n_threads)
    n = arr.shape[0]
    # directed[i, j]: distance from bag i to bag j.
    directed = np.zeros((n, n), dtype=np.float64)
    mean_mean = inner == "mean-mean"
    for res in block_reductions(
        arr, memory_mb=mem, maxima=not mean_mean, col_max=True, mean_dist=mean_mean, workers=nt
    ):
        ra, cb = res.rows, res.cols
        if mean_mean:
            directed[np.ix_(ra, cb)] = res.mean_dist
            directed[np.ix_(cb, ra)] = res.mean_dist.T
            continue
        directed[np.ix_(ra, cb)] = directed_distances(res.row_max, inner)
        directed[np.ix_(cb, ra)] = directed_distances(res.col_max, inner)
    return symmetrise(directed, inner, outer)

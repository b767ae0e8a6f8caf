"""Default parameters, chosen once from the shared data (see BENCHMARKS.md).

Patch embeddings are unit vectors, so patch distances lie in ``[0, 2]`` and a
temperature ``tau`` is measured in those units: a patch whose anomaly score is
``tau`` larger than another's gets ``e`` times its weight.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TAU_UNSUPERVISED",
    "DEFAULT_TAU_SEMI",
    "DEFAULT_AGGREGATE",
    "DEFAULT_TOPK_FRACTION",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_METHOD",
]

#: Softmax temperature for unsupervised weights (Eq. 5), in patch-distance units.
DEFAULT_TAU_UNSUPERVISED = 0.05
#: Softmax temperature for semi-supervised weights (Eq. 6), in patch-distance units.
DEFAULT_TAU_SEMI = 0.05
#: How per-image min distances are aggregated over the other images (Eq. 5).
DEFAULT_AGGREGATE = "mean"
#: Fraction ``q`` used by ``aggregate="topk_mean"``.
DEFAULT_TOPK_FRACTION = 0.1
#: Working-memory budget of the scoring kernels, in MiB.
DEFAULT_MEMORY_MB = 512.0
#: Clustering method.
DEFAULT_METHOD = "ward"

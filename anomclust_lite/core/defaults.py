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
    "BAG_DTYPES",
]

#: Softmax temperature for unsupervised weights (Eq. 5), in patch-distance units.
#: Chosen once on MVTec bottle + pill + MTD (int8 ResNet-18 layer 2, Ward): 0.03
#: has the best NMI averaged over the three sets and the smallest worst-set loss;
#: the useful range is about 0.02-0.05 (a patch scoring 0.03 above another gets
#: e times its weight; the top few dozen of 784 patches carry most of the weight).
#: Much smaller tau keeps only a handful of patches, much larger tends to plain
#: average pooling. Roughly ``0.3 * std`` of the patch scores on these sets; a
#: backbone whose score spread differs a lot may want tau scaled accordingly.
DEFAULT_TAU_UNSUPERVISED = 0.03
#: Softmax temperature for semi-supervised weights (Eq. 6), in patch-distance units.
#: Chosen the same way: 0.03 is best on average (range about 0.02-0.04).
DEFAULT_TAU_SEMI = 0.03
#: How per-image min distances are aggregated over the other images (Eq. 5).
#: "mean" (the paper's choice): at the chosen tau it ties with "topk_mean" on average
#: and degrades least on the set where it is weakest; "max" and "min" are worse.
DEFAULT_AGGREGATE = "mean"
#: Fraction ``q`` used by ``aggregate="topk_mean"``; q in 0.05-0.5 performed alike.
DEFAULT_TOPK_FRACTION = 0.1
#: Working-memory budget of the scoring kernels, in MiB.
DEFAULT_MEMORY_MB = 512.0
#: Clustering method.
DEFAULT_METHOD = "ward"
#: Storage types bags may be held in (the kernels compute in float32 either way).
BAG_DTYPES = ("float32", "float16")

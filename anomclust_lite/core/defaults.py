"""Default parameters, chosen once from the shared data (see BENCHMARKS.md).

Patch embeddings are unit vectors, so patch distances lie in ``[0, 2]`` and a
temperature ``tau`` is measured in those units: a patch whose anomaly score is
``tau`` larger than another's gets ``e`` times its weight. A relative temperature
``"<c>x"`` is ``c`` times each image's own patch-score standard deviation.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_TAU_UNSUPERVISED",
    "DEFAULT_TAU_SEMI",
    "DEFAULT_AGGREGATE",
    "DEFAULT_TOPK_FRACTION",
    "DEFAULT_MEMORY_MB",
    "MIN_INPUT_BATCH_MB",
    "THREADS_PER_CPU_MAX",
    "DEFAULT_METHOD",
    "DEFAULT_CONSENSUS",
    "CONSENSUS_TAU_FACTORS",
    "CONSENSUS_EXTRA_K",
    "DEFAULT_BANK_SIZE",
    "DEFAULT_SCORE_REFERENCE",
    "DEFAULT_SUBSAMPLE_FROM",
    "DEFAULT_FIT_SIZE",
    "DEFAULT_PROJECT_OUT",
    "BAG_DTYPES",
]

#: Softmax temperature for unsupervised weights (Eq. 5), in patch-distance units.
#: Chosen once (issue 15, ``tools/tune_defaults.py``, BENCHMARKS.md "Defaults for the
#: ResNet-50 v2 backbone") on MVTec bottle + pill + MTD together, Ward, K known, for the
#: default backbone (embedded ResNet-50 v2 layer 2) and checked on the int8 ResNet-18:
#: 0.02 has the best NMI averaged over the three sets and its neighbouring tau values
#: (80 %-subsample means) averaged over both backbones (0.367; 0.03: 0.366), the best
#: on the ResNet-50 v2 alone (0.373) and there the smallest worst-set loss (0.056 below
#: each set's own best setting; 0.03: 0.085). Useful range 0.015-0.03; much smaller keeps
#: a handful of patches, much larger tends to average pooling (bottle alone prefers
#: 0.1-0.2, pill and MTD 0.015-0.03). It is absolute, not relative to the score spread:
#: tau = c x std of the patch scores was measured too and gained 0.003 NMI (noise); the
#: std of the scores is 0.05-0.18 on these sets for both backbones, so 0.02 is about
#: 0.1-0.4 x std. A backbone with a very different spread may want tau scaled by it.
#: Was 0.03 (chosen on the int8 ResNet-18, where 0.02 and 0.03 tie).
DEFAULT_TAU_UNSUPERVISED = 0.02
#: Softmax temperature for semi-supervised weights (Eq. 6): relative, 0.4 x each image's own
#: standard deviation of its patch scores (``core/weights.temperatures``). Chosen once
#: (``tools/tune_defaults.py``, BENCHMARKS.md "Semi-supervised tau on the full protocol") on
#: bottle + pill + MTD, both shared backbones, with the nuisance projection: on the paper's
#: protocol (every normal image, the default coreset) it has the best smoothed NMI over both
#: backbones (0.457; absolute 0.03: 0.433, 0.04: 0.420; 0.3 x the std of all scores: 0.446),
#: and on the capped tuning sets (100 normal images) it ties the best (0.443; 0.5x 0.445,
#: 0.04: 0.433). An absolute tau does not carry over between the two: scores against a
#: larger normal bank are lower and less spread (best 0.04 capped, 0.02-0.03 full). Was 0.04
#: (absolute; models saved before format 4 keep it).
DEFAULT_TAU_SEMI = "0.4x"
#: How per-image min distances are aggregated over the other images (Eq. 5).
#: "mean" (the paper's choice): "topk_mean" with q = 0.1 at its best tau (0.04) ties
#: with it on the average over both backbones (0.369 vs 0.367) but loses more on its
#: worst set on the ResNet-18 (0.179 vs 0.142); q = 0.3 (MuSc's fraction) is lower
#: (0.362); "max" and "min" are clearly worse.
DEFAULT_AGGREGATE = "mean"
#: Fraction ``q`` used by ``aggregate="topk_mean"``: 0.1 was at least as good as 0.2,
#: 0.3 and 0.5 on both backbones.
DEFAULT_TOPK_FRACTION = 0.1
#: Working-memory budget of the scoring kernels, in MiB.
DEFAULT_MEMORY_MB = 512.0
#: A batch of model inputs may always take this many MiB, whatever ``memory_mb`` says.
MIN_INPUT_BATCH_MB = 64.0
#: Thread counts (``n_threads``, ``threads``, ``--threads``) may be at most this many per usable CPU.
THREADS_PER_CPU_MAX = 4
#: Clustering method.
DEFAULT_METHOD = "ward"
#: Consensus Ward (:mod:`anomclust_lite.clustering.consensus`; not in the paper): ``"auto"`` clusters
#: the co-association of the Ward trees at the temperatures ``tau x CONSENSUS_TAU_FACTORS``, each cut
#: at ``K .. K + CONSENSUS_EXTRA_K``, wherever it applies (Ward on softmax-weighted WA embeddings);
#: ``"off"`` cuts the one Ward tree at ``tau`` (the paper). Chosen once (``tools/bench_consensus.py``,
#: BENCHMARKS.md "Consensus Ward") on bottle + pill + MTD, both shared backbones, both modes, the
#: full and the capped protocol: five temperatures 0.5-1.5 x tau, each tree cut at K..K+6, had the
#: largest mean gain (+0.013 subsample NMI over one tree) and the only gain in all eight settings; on
#: the full protocol the ResNet-50 v2 rises from 0.476 to 0.510 semi-supervised (paper 0.504) and
#: from 0.397 to 0.411 unsupervised. Cutting one tree at several K alone does not help (-0.004).
DEFAULT_CONSENSUS = "auto"
#: Temperatures of the consensus, as factors of ``tau``: half to one and a half times it.
CONSENSUS_TAU_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)
#: Every consensus tree is cut at ``K, K + 1, ..., K + CONSENSUS_EXTRA_K`` clusters.
CONSENSUS_EXTRA_K = 6
#: Patches of the semi-supervised normal bank kept by the greedy k-centre coreset
#: (:mod:`anomclust_lite.core.coreset`): a fraction of the bank's patches (at least
#: ``MIN_CORESET_PATCHES``). Chosen once on bottle + pill + MTD (``tools/bench_coreset.py``,
#: BENCHMARKS.md "Compact normal bank"), with the nuisance projection on as the estimator
#: clusters: 10 % keeps NMI, ARI and the good/defect AUROC within 0.011 of the whole bank on
#: all three sets (5 %: pill -0.021 NMI / -0.025 ARI) and scores MTD 10x faster than the whole
#: bank in one run (5 %: 18x). Re-checked at the relative semi-supervised tau: no loss beyond
#: 0.011 (pill +0.022 NMI over the whole bank). Was 0.05.
DEFAULT_BANK_SIZE = 0.1
#: Unsupervised scores of ``DEFAULT_SUBSAMPLE_FROM`` images or more aggregate over a seeded
#: subsample of this many reference images (Eq. 7): ``N * R`` image pairs instead of
#: ``N^2 / 2``. Chosen on bottle + pill + MTD (``tools/bench_scale.py references``,
#: BENCHMARKS.md "Unsupervised at scale").
DEFAULT_SCORE_REFERENCE = 64
#: The switch-over: from this many images on, unsupervised scores use Eq. 7 (below it every
#: image is scored against every other, at most 125k image pairs, about 9 min on 2 idle cores).
DEFAULT_SUBSAMPLE_FROM = 500
#: Above this many images a seeded sample of this size is fitted (scored, clustered) and the
#: other images are assigned to its clusters in chunks, so memory stays bounded (no N x N
#: matrix; the sample's bags, plus one chunk). BENCHMARKS.md "Unsupervised at scale".
DEFAULT_FIT_SIZE = 2000
#: Storage types bags may be held in (the kernels compute in float32 either way).
BAG_DTYPES = ("float32", "float16")

#: Principal directions of the clustered images' patches removed from the WA embeddings
#: (:mod:`anomclust_lite.core.projection`; 0 = the paper's method); ``project_out="auto"``
#: removes ``min(DEFAULT_PROJECT_OUT, D // 16)`` for D-dimensional features, so features of
#: fewer than 16 dimensions keep every direction. Chosen once (issue 15,
#: ``tools/tune_defaults.py projection``, BENCHMARKS.md "Nuisance projection") on bottle +
#: pill + MTD, both shared backbones, unsupervised and semi-supervised, over the tau values
#: around the defaults: 8 raised the mean NMI in all four settings (by 0.013-0.033 on
#: 80 %-subsample means); 4 gained less, 16 and more lost on the int8 ResNet-18 (D = 128).
DEFAULT_PROJECT_OUT = 8

#!/usr/bin/env python
"""How close automatic choices of K get to the true K on the shared real data.

For every data set (MVTec AD bottle and pill, MTD; the paper's protocol, see
:mod:`anomclust_lite.datasets`) and every weighting (unsupervised Eq. 5 and
semi-supervised Eq. 6 softmax weights at the default temperatures) it builds
the weighted-average (WA) distances, the Ward tree, and lets each candidate
criterion choose K among ``2 .. --k-max``:

- ``L-method``: the knee of the merge-cost graph (Salvador and Chan 2004,
  with their refinement) — what :func:`anomclust_lite.clustering.auto_k.choose_k` does;
- ``gap``: the gap statistic (Tibshirani, Walther and Hastie 2001) with 50
  uniform reference sets in the principal-axis box, each clustered by Ward,
  and the one-standard-error rule;
- ``gap-gauss``: the same with Gaussian reference sets of the data's
  principal variances;
- ``silhouette``: the largest mean silhouette (the previous default);
- ``silhouette-min5%``: the same among partitions whose smallest cluster has
  at least ``max(2, 5% of N)`` images (a penalty for tiny clusters);
- ``calinski-harabasz``: the largest between/within variance ratio;
- ``ward-jump``: the largest relative jump of the Ward merge heights,
  ``h(K -> K-1) / h(K+1 -> K)``;
- ``eigengap``: the largest gap ``lambda_{K+1} - lambda_K`` of the normalised
  Laplacian of a locally scaled Gaussian affinity (7th neighbour,
  Zelnik-Manor and Perona 2004);
- ``stability``: the largest mean ARI between Ward partitions of pairs of
  80 % subsamples, on their common images (Ben-Hur et al. 2002), 20 pairs;
- ``prediction-strength``: the largest K whose mean prediction strength over
  10 random halvings is at least 0.8 (Tibshirani and Walther 2005); 1 when
  no K reaches it.

It prints (and with ``--out`` writes) a Markdown table of chosen K and the
NMI of the Ward tree cut at that K, the mean absolute error of K per
criterion, and the run time of each criterion. All randomness comes from
``--seed``.

Usage::

    python tools/auto_k_eval.py [--shared DIR] [--cache-dir /tmp/ac_cache] \\
        [--datasets bottle pill mtd] [--out AUTOK.md]

``--cache-dir`` keeps the bags (the package's feature cache) and the patch
scores of each data set and weighting (the same cache format, in
``<cache-dir>/scores``, keyed by a sha256 of the bags), so a second run skips
the extraction and the patch scoring (about 25 minutes for MTD on two cores).
The WA distances come from :func:`anomclust_lite.embed_bags`, the pipeline
the estimator and the command-line tool use.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.cluster.hierarchy import linkage as scipy_linkage
from scipy.spatial.distance import squareform

import anomclust_lite as ac
from anomclust_lite import choose_k, cut_linkage, silhouette_score, within_cluster_dispersion
from anomclust_lite.core import defaults

logger = logging.getLogger("auto_k_eval")

SHARED_MODEL = Path("models") / "resnet18_l2l3_int8.onnx"
MODEL_OUTPUT = "relu_43"
DATASETS = ("bottle", "pill", "mtd")
MODES = ("unsupervised", "semi")
TAUS = {"unsupervised": defaults.DEFAULT_TAU_UNSUPERVISED, "semi": defaults.DEFAULT_TAU_SEMI}
#: Part of every score-cache entry's settings; bump when the scores change meaning.
SCORE_CACHE_VERSION = 1

#: Fixed parameters of the candidate criteria (the same for every data set).
STABILITY_PAIRS = 20
STABILITY_FRACTION = 0.8
PREDICTION_SPLITS = 10
PREDICTION_THRESHOLD = 0.8
GAP_REFERENCES = 50
EIGENGAP_NEIGHBOUR = 7
MIN_CLUSTER_FRACTION = 0.05

Criterion = Callable[[np.ndarray, np.ndarray, List[int], int], int]


def eval_set(shared: Path, name: str) -> ac.EvalSet:
    """The paper's evaluation set ``name`` under ``shared/data``."""
    if name == "mtd":
        return ac.mtd(shared / "data" / "mtd")
    return ac.mvtec_category(shared / "data" / "mvtec" / name)


# --------------------------------------------------------------------------- WA distances


def _embedding(bags: np.ndarray, normal_bags: Optional[np.ndarray], cache: Optional[ac.FeatureCache]) -> "ac.WeightedEmbedding":
    """The pipeline's WA embedding, unsupervised (``normal_bags`` None) or semi-supervised, at the default tau.

    With a ``cache``, the patch scores are kept there, keyed by the bags' content.
    """
    mode = "unsupervised" if normal_bags is None else "semi"
    if cache is None:
        return ac.embed_bags(bags, weights=mode, normal_bags=normal_bags, tau=TAUS[mode])
    settings = {"version": SCORE_CACHE_VERSION, "scores": mode, "aggregate": defaults.DEFAULT_AGGREGATE,
                "q": defaults.DEFAULT_TOPK_FRACTION}
    content = ac.FeatureCache.content_sha256(*([bags] if normal_bags is None else [bags, normal_bags]))
    key = cache.key(content, settings)
    scores = cache.get(key, settings, shape=bags.shape[:2])
    if scores is not None:
        return ac.embed_bags(bags, weights=mode, scores=scores, tau=TAUS[mode])
    emb = ac.embed_bags(bags, weights=mode, normal_bags=normal_bags, tau=TAUS[mode])
    cache.put(key, emb.scores, settings)
    return emb


def wa_distance_sets(
    shared: Path, name: str, modes: Sequence[str], cache_dir: Optional[Path]
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{mode: (WA distances (N, N) float64, class labels (N,))}`` of one data set."""
    data = eval_set(shared, name)
    extractor = ac.Extractor(shared / SHARED_MODEL, output=MODEL_OUTPUT, cache_dir=cache_dir)
    cache = ac.FeatureCache(cache_dir / "scores") if cache_dir is not None else None
    t0 = time.perf_counter()
    bags = extractor.extract(data.paths)
    logger.info("%s: %d bags in %.0f s", name, bags.shape[0], time.perf_counter() - t0)
    labels = np.array(data.labels)
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        normal_bags = extractor.extract(data.normal_paths) if mode == "semi" else None
        d = _embedding(bags, normal_bags, cache).distances().astype(np.float64)
        logger.info("%s/%s: scores and distances in %.0f s", name, mode, time.perf_counter() - t0)
        out[mode] = (d, labels)
    return out


# --------------------------------------------------------------------------- candidate criteria


def _argmax(scores: Dict[int, float]) -> int:
    """The K of the highest score; ties go to the smaller K."""
    return max(scores, key=lambda k: (round(scores[k], 12), -k))


def crit_l_method(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    return choose_k(d, linkage=z, k_max=ks[-1]).k


def _ward_log_dispersions(points: np.ndarray, cand: List[int]) -> np.ndarray:
    """``log W_K`` of Ward's partitions: SciPy's Ward height is ``sqrt(2 * increase of W)``."""
    heights = scipy_linkage(points, "ward")[:, 2]
    cum = np.concatenate([[0.0], np.cumsum(0.5 * heights**2)])
    return np.log([cum[points.shape[0] - k] for k in cand])


def _gap_choice(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int, reference: str) -> int:
    """Gap statistic over K in ``ks`` with Tibshirani's one-standard-error rule."""
    logw = np.log([within_cluster_dispersion(d, cut_linkage(z, k)) for k in ks])
    x = ac.mds_embedding(d)  # principal axes of the data
    rng = np.random.default_rng(seed)
    ref = np.empty((GAP_REFERENCES, len(ks)))
    for b in range(GAP_REFERENCES):
        if reference == "uniform":
            sample = rng.uniform(x.min(axis=0), x.max(axis=0), size=x.shape)
        else:
            sample = rng.normal(size=x.shape) * x.std(axis=0)
        ref[b] = _ward_log_dispersions(sample, ks)
    gap = ref.mean(axis=0) - logw
    se = ref.std(axis=0) * np.sqrt(1 + 1 / GAP_REFERENCES)
    for i in range(len(ks) - 1):
        if gap[i] >= gap[i + 1] - se[i + 1]:
            return ks[i]
    return ks[-1]


def crit_gap(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    return _gap_choice(d, z, ks, seed, "uniform")


def crit_gap_gauss(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    return _gap_choice(d, z, ks, seed, "gauss")


def crit_silhouette(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    return _argmax({k: silhouette_score(d, cut_linkage(z, k)) for k in ks})


def crit_silhouette_min(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    smallest = max(2.0, MIN_CLUSTER_FRACTION * d.shape[0])
    scores = {}
    for k in ks:
        labels = cut_linkage(z, k)
        if np.bincount(labels).min() >= smallest:
            scores[k] = silhouette_score(d, labels)
    return _argmax(scores) if scores else 1


def crit_calinski_harabasz(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    n = d.shape[0]
    total = within_cluster_dispersion(d, np.zeros(n))
    scores = {}
    for k in ks:
        w = within_cluster_dispersion(d, cut_linkage(z, k))
        scores[k] = ((total - w) / (k - 1)) / (w / (n - k))
    return _argmax(scores)


def crit_ward_jump(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    h = z[:, 2]  # h[-(k-1)]: the merge that goes from k to k-1 clusters
    return _argmax({k: h[-(k - 1)] / max(h[-k], 1e-300) for k in ks})


def crit_eigengap(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    n = d.shape[0]
    sigma = np.sort(d, axis=1)[:, min(EIGENGAP_NEIGHBOUR, n - 1)]
    affinity = np.exp(-(d**2) / np.maximum(np.outer(sigma, sigma), 1e-300))
    np.fill_diagonal(affinity, 0.0)
    deg = affinity.sum(axis=1)
    lap = np.eye(n) - affinity / np.sqrt(np.outer(deg, deg))
    ev = np.linalg.eigvalsh(lap)
    return _argmax({k: float(ev[k] - ev[k - 1]) for k in ks})


def _ward(d: np.ndarray) -> np.ndarray:
    return scipy_linkage(squareform(d, checks=False), "ward")


def crit_stability(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    m = int(round(STABILITY_FRACTION * n))
    sums = {k: 0.0 for k in ks}
    for _ in range(STABILITY_PAIRS):
        a, b = np.sort(rng.choice(n, m, replace=False)), np.sort(rng.choice(n, m, replace=False))
        za, zb = _ward(d[np.ix_(a, a)]), _ward(d[np.ix_(b, b)])
        _, ia, ib = np.intersect1d(a, b, return_indices=True)
        for k in ks:
            sums[k] += ac.ari(cut_linkage(za, k)[ia], cut_linkage(zb, k)[ib])
    return _argmax(sums)


def crit_prediction_strength(d: np.ndarray, z: np.ndarray, ks: List[int], seed: int) -> int:
    x = ac.mds_embedding(d)
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    sums = {k: 0.0 for k in ks}
    for _ in range(PREDICTION_SPLITS):
        perm = rng.permutation(n)
        train, test = x[np.sort(perm[: n // 2])], x[np.sort(perm[n // 2:])]
        z_train, z_test = scipy_linkage(train, "ward"), scipy_linkage(test, "ward")
        for k in ks:
            lab_train, lab_test = cut_linkage(z_train, k), cut_linkage(z_test, k)
            centres = np.stack([train[lab_train == c].mean(axis=0) for c in range(k)])
            predicted = np.argmin(((test[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
            strengths = []
            for c in range(k):
                members = predicted[lab_test == c]
                if members.shape[0] < 2:
                    continue
                counts = np.bincount(members)
                strengths.append(float((counts * (counts - 1)).sum()) / (members.shape[0] * (members.shape[0] - 1)))
            sums[k] += min(strengths) if strengths else 0.0
    strong = [k for k in ks if sums[k] / PREDICTION_SPLITS >= PREDICTION_THRESHOLD]
    return max(strong) if strong else 1


CRITERIA: Dict[str, Criterion] = {
    "L-method": crit_l_method,
    "gap": crit_gap,
    "gap-gauss": crit_gap_gauss,
    "silhouette": crit_silhouette,
    "silhouette-min5%": crit_silhouette_min,
    "calinski-harabasz": crit_calinski_harabasz,
    "ward-jump": crit_ward_jump,
    "eigengap": crit_eigengap,
    "stability": crit_stability,
    "prediction-strength": crit_prediction_strength,
}


# --------------------------------------------------------------------------- evaluation and report


def evaluate(d: np.ndarray, labels: np.ndarray, k_max: int, seed: int) -> Dict[str, Dict[str, float]]:
    """``{criterion: {"k", "nmi", "seconds"}}`` plus ``"true"`` and ``"best"`` rows for one matrix."""
    z = ac.linkage_matrix(d, method="ward", metric="precomputed")
    n = d.shape[0]
    ks = list(range(2, min(k_max, n - 1) + 1))

    def nmi_at(k: int) -> float:
        return ac.nmi(labels, cut_linkage(z, k)) if k > 1 else 0.0

    rows: Dict[str, Dict[str, float]] = {}
    for name, crit in CRITERIA.items():
        t0 = time.perf_counter()
        k = int(crit(d, z, ks, seed))
        rows[name] = {"k": k, "nmi": nmi_at(k), "seconds": time.perf_counter() - t0}
    k_true = int(np.unique(labels).shape[0])
    rows["true"] = {"k": k_true, "nmi": nmi_at(k_true), "seconds": 0.0}
    best = max(ks, key=nmi_at)
    rows["best-NMI"] = {"k": best, "nmi": nmi_at(best), "seconds": 0.0}
    return rows


def markdown(results: Dict[Tuple[str, str], Dict[str, Dict[str, float]]]) -> str:
    """Tables: chosen K (NMI) per data set and weighting, errors and times per criterion."""
    names = list(CRITERIA)
    lines = ["| data set | weights | true K (NMI) | best K (NMI) | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for (ds, mode), rows in results.items():
        cells = [f"{int(rows[c]['k'])} ({rows[c]['nmi']:.3f})" for c in ["true", "best-NMI"] + names]
        lines.append(f"| {ds} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "| criterion | mean abs(K - K_true) | exact | mean NMI at chosen K | max seconds |",
              "|---|---|---|---|---|"]
    for c in names + ["true"]:
        errs = [abs(r[c]["k"] - r["true"]["k"]) for r in results.values()]
        lines.append(
            f"| {c} | {np.mean(errs):.2f} | {sum(e == 0 for e in errs)}/{len(errs)} | "
            f"{np.mean([r[c]['nmi'] for r in results.values()]):.3f} | "
            f"{max(r[c]['seconds'] for r in results.values()):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--cache-dir", type=Path,
                        help="keep the bags and the patch scores here between runs (default: none)")
    parser.add_argument("--k-max", type=int, default=15, help="largest candidate K (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every randomised criterion (default 0)")
    parser.add_argument("--out", type=Path, help="also write the Markdown tables to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shared = ac.shared_root(args.shared)
    if not (shared / SHARED_MODEL).is_file():
        print(f"shared data not found under {ac.display_path(shared)} (use --shared or ANOMCLUST_SHARED)",
              file=sys.stderr)
        return 1
    if args.k_max < 2:
        print(f"--k-max must be >= 2; got {args.k_max}", file=sys.stderr)
        return 1
    results: Dict[Tuple[str, str], Dict[str, Dict[str, float]]] = {}
    for ds in args.datasets:
        sets = wa_distance_sets(shared, ds, args.modes, args.cache_dir)
        for mode in args.modes:
            d, labels = sets[mode]
            results[(ds, mode)] = evaluate(d, labels, args.k_max, args.seed)
            logger.info("%s/%s: %s", ds, mode, {c: int(r["k"]) for c, r in results[(ds, mode)].items()})
    text = markdown(results)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The experiments on one evaluation set: the patch comparisons once, then every table's numbers.

Each dataset's patch comparisons are done once: one pass over all image
pairs keeps, for every patch, its best-match similarity in every other
image (an ``(N, M, N)`` float32 array, 1.06 GB for MTD), from which every
score aggregate and every Hausdorff variant is derived (mean-mean is
accumulated in the same pass); one pass over the normal images gives the
semi-supervised scores of all nested normal subsets. These equal
:func:`anomclust_lite.patch_scores`, :func:`anomclust_lite.hausdorff_distances`
and :func:`anomclust_lite.normal_scores` (checked by the tests), which would
need one pass each.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

import anomclust_lite as ac
from anomclust_lite.core import defaults
from anomclust_lite.datasets import load_mask, mask_cells

from .timing import StageTimer

logger = logging.getLogger("reproduce")

#: The six Hausdorff variants of the paper's Table 5: (inner, outer).
HAUSDORFF_VARIANTS = (
    ("max-min", "max"),
    ("max-min", "mean"),
    ("mean-min", "max"),
    ("mean-min", "mean"),
    ("min-min", "-"),
    ("mean-mean", "-"),
)
#: Temperatures swept for the tau-sensitivity study, in patch-distance units.
TAU_GRID = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
TAU_GRID_QUICK = (0.01, 0.03, 0.1)
#: Shares of the labelled normal set (nested, seeded subsamples).
NORMAL_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
#: Purity targets of the reduction ratio R@P.
PURITY_TARGETS = (0.9, 0.95, 0.99)
METRIC_KEYS = ("nmi", "ari", "accuracy", "f1_macro")
#: The embeddings of Tables 1 and 3, in their order.
EMBEDDINGS = ("avg_pool", "max_hausdorff", "wa_unsup", "wa_semi", "wa_mask")
#: Class names of the defect-free images in the evaluation sets (MVTec, MTD).
NORMAL_CLASSES = ("good", "Free")


@dataclass
class Settings:
    """What to run; ``quick`` shrinks everything for a smoke run."""

    taus: Tuple[float, ...] = TAU_GRID
    methods: Tuple[str, ...] = ac.METHODS
    hausdorff_variants: Tuple[Tuple[str, str], ...] = HAUSDORFF_VARIANTS
    normal_fractions: Tuple[float, ...] = NORMAL_FRACTIONS
    max_normal: Optional[int] = None
    n_subsamples: int = 20
    seed: int = 0
    memory_mb: float = defaults.DEFAULT_MEMORY_MB

    @classmethod
    def quick(cls, max_normal: Optional[int] = 20) -> "Settings":
        """Smoke-run settings: 3 taus, Ward + k-means, max-Hausdorff only, <= 20 normal images."""
        return cls(
            taus=TAU_GRID_QUICK,
            methods=("ward", "kmeans"),
            hausdorff_variants=(("max-min", "max"),),
            normal_fractions=(1.0,),
            max_normal=max_normal,
            n_subsamples=3,
        )


@dataclass
class Scores:
    """Everything one evaluation set's patch comparisons give.

    ``unsup``: ``{aggregate: (N, M) patch scores}``; ``haus``:
    ``{"inner/outer": (N, N) Hausdorff distances}``; ``semi``: the
    ``(n_tiers, N, M)`` semi-supervised scores of the nested normal subsets.
    """

    unsup: Dict[str, np.ndarray]
    haus: Dict[str, np.ndarray]
    semi: np.ndarray


# --------------------------------------------------------------------------- scores, cached


#: Part of every score-cache entry's settings; bump when the scores change meaning.
SCORE_CACHE_VERSION = 2


def _score_cache_id(bags: np.ndarray, normal_bags: np.ndarray, tiers: np.ndarray, settings: Settings) -> Tuple[str, Dict[str, Any]]:
    """(sha256 of the bags, the normal bags and their tiers; the settings the scores depend on)."""
    meta = {
        "version": SCORE_CACHE_VERSION,
        "q": defaults.DEFAULT_TOPK_FRACTION,
        "variants": [list(v) for v in settings.hausdorff_variants],
        "n_tiers": len(settings.normal_fractions),
    }
    return ac.FeatureCache.content_sha256(bags, normal_bags, tiers), meta


def _cached_arrays(settings: Settings) -> Dict[str, str]:
    """``{array name: dtype}`` of one set's cached scores."""
    names = {f"score:{agg}": "float32" for agg in ac.AGGREGATES}
    names.update({f"haus:{key}": "float64" for key in _hausdorff_keys(settings)})
    names["semi"] = "float32"
    return names


def _hausdorff_keys(settings: Settings) -> List[str]:
    keys = [f"{inner}/{outer}" for inner, outer in settings.hausdorff_variants]
    return keys if "max-min/max" in keys else keys + ["max-min/max"]


def _split(arrays: Dict[str, np.ndarray]) -> Scores:
    return Scores(
        unsup={name[len("score:"):]: a for name, a in arrays.items() if name.startswith("score:")},
        haus={name[len("haus:"):]: a for name, a in arrays.items() if name.startswith("haus:")},
        semi=arrays["semi"],
    )


def load_scores(cache: ac.FeatureCache, content: str, meta: Dict[str, Any], settings: Settings) -> Optional[Scores]:
    """The cached scores of the bags hashed to ``content``, or None when any array is missing."""
    arrays = {}
    for name, dtype in _cached_arrays(settings).items():
        entry = dict(meta, array=name)
        arrays[name] = cache.get(cache.key(content, entry), entry, dtype=dtype)
        if arrays[name] is None:
            return None
    return _split(arrays)


def store_scores(cache: ac.FeatureCache, content: str, meta: Dict[str, Any], scores: Scores, settings: Settings) -> None:
    """Store every array of ``scores`` in ``cache`` (one entry each, atomically)."""
    arrays = {f"score:{agg}": a for agg, a in scores.unsup.items()}
    arrays.update({f"haus:{key}": a for key, a in scores.haus.items()})
    arrays["semi"] = scores.semi
    for name, dtype in _cached_arrays(settings).items():
        entry = dict(meta, array=name)
        cache.put(cache.key(content, entry), arrays[name], entry, dtype=dtype)


def _one_pass_scores(
    name: str, bags: np.ndarray, normal_bags: np.ndarray, tiers: np.ndarray, settings: Settings, timer: StageTimer
) -> Scores:
    """Every aggregate and Hausdorff variant from one unsupervised pass, the normal tiers from one more."""
    want_mm = any(inner == "mean-mean" for inner, _ in settings.hausdorff_variants)
    n = bags.shape[0]
    with timer(name, "unsupervised pass", f"{n * (n - 1) // 2} image pairs, (N, M, N) match tensor"):
        matches = ac.nearest_patch_similarities(bags, memory_mb=settings.memory_mb, mean_mean=want_mm)
    with timer(name, "derive scores + Hausdorff"):
        unsup = {
            agg: ac.scores_from_matches(matches, aggregate=agg, q=defaults.DEFAULT_TOPK_FRACTION)
            for agg in ac.AGGREGATES
        }
        haus = {}
        for key in _hausdorff_keys(settings):
            inner, outer = key.split("/")
            haus[key] = ac.hausdorff_from_matches(matches, inner=inner, outer=outer if outer != "-" else "max")
    del matches
    n_tiers = len(settings.normal_fractions)
    n_cmp = n * int((tiers < n_tiers).sum())
    with timer(name, "semi-supervised pass", f"{n_cmp} image pairs, {n_tiers} nested normal subsets"):
        semi = ac.tiered_normal_scores(bags, normal_bags, tiers, n_tiers=n_tiers, memory_mb=settings.memory_mb)
    return Scores(unsup, haus, semi)


def compute_scores(
    name: str,
    bags: np.ndarray,
    normal_bags: np.ndarray,
    tiers: np.ndarray,
    settings: Settings,
    timer: StageTimer,
    score_cache: Optional[Path],
) -> Scores:
    """Patch scores per aggregate, Hausdorff matrices and tiered normal scores of one set.

    With ``score_cache`` (a folder) the arrays are kept there as
    :class:`anomclust_lite.FeatureCache` entries, keyed by a sha256 of the
    bags, the normal subsets and the settings, and loaded instead of
    recomputed when all of them are present.
    """
    cache = content = meta = None
    if score_cache is not None:
        with timer(name, "score cache lookup"):
            cache = ac.FeatureCache(score_cache)
            content, meta = _score_cache_id(bags, normal_bags, tiers, settings)
            cached = load_scores(cache, content, meta, settings)
        if cached is not None:
            logger.info("[%s] scores loaded from %s", name, score_cache)
            return cached
    scores = _one_pass_scores(name, bags, normal_bags, tiers, settings, timer)
    if cache is not None:
        store_scores(cache, content, meta, scores, settings)
    return scores


# --------------------------------------------------------------------------- evaluation


def _subsamples(n: int, count: int, seed: int) -> List[np.ndarray]:
    """``count`` seeded, sorted subsets of 80 % of ``range(n)``."""
    rng = np.random.default_rng([seed, 80])
    return [np.sort(rng.permutation(n)[: int(0.8 * n)]) for _ in range(count)]


def _stats(s: np.ndarray) -> Dict[str, float]:
    """Spread of patch scores, for reading tau."""
    return {
        "mean": float(s.mean()),
        "std": float(s.std()),
        "std_within_image": float(s.std(axis=1).mean()),
        "p99_minus_median_within_image": float(np.mean(np.percentile(s, 99, axis=1) - np.median(s, axis=1))),
    }


class Evaluator:
    """Clusters embeddings or distances of one set into its ``k`` classes and scores the partitions."""

    def __init__(self, bags: np.ndarray, labels: np.ndarray, k: int, settings: Settings) -> None:
        self.bags = bags
        self.labels = labels
        self.k = k
        self.settings = settings

    def embed(
        self, mode: str, scores: np.ndarray, tau: Optional[float] = None, masks: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """WA embeddings of the bags by the package's pipeline (:func:`anomclust_lite.embed_bags`).

        ``scores`` are given, so nothing is scored again; ``mode`` is the
        pipeline's weight mode (``"uniform"`` and ``"mask"`` ignore them).
        """
        return ac.embed_bags(self.bags, weights=mode, scores=scores, tau=tau, masks=masks).embeddings

    def report(
        self, x: np.ndarray, method: str = "ward", metric: str = "euclidean", subset: Optional[np.ndarray] = None
    ) -> Dict[str, float]:
        """The metrics of clustering ``x`` (rows of ``subset``, when given) with ``method``."""
        labels = self.labels if subset is None else self.labels[subset]
        x = x if subset is None else x[subset]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ac.ClusteringWarning)
            pred = ac.cluster(x, self.k, method=method, metric=metric, seed=self.settings.seed)
        rep = ac.clustering_report(labels, pred)
        return {key: float(rep[key]) for key in METRIC_KEYS}

    def purity(self, x: np.ndarray, metric: str) -> Dict[str, Any]:
        """Purity with over-clustering: the Ward tree cut at every K."""
        ks, pur = ac.purity_curve(self.labels, ac.linkage_matrix(x, method="ward", metric=metric))
        out: Dict[str, Any] = {"mauc": ac.purity_auc(ks, pur)}
        for p in PURITY_TARGETS:
            out[f"r@{p}"] = ac.reduction_at_purity(ks, pur, p, n_samples=self.labels.shape[0])
        out["curve_k"] = ks.tolist()
        out["curve_purity"] = [round(float(v), 5) for v in pur]
        return out

    def tau_sweep(self, mode: str, scores: np.ndarray, subsets: Sequence[np.ndarray]) -> Dict[str, List[float]]:
        """``{repr(tau): [NMI on all images, mean NMI over the subsets]}`` over the settings' taus."""
        out = {}
        for t in self.settings.taus:
            e = self.embed(mode, scores, t)
            sub = [self.report(e, subset=i)["nmi"] for i in subsets]
            out[repr(t)] = [self.report(e)["nmi"], float(np.mean(sub)) if sub else math.nan]
        return out


def _tables_1_to_3(ev: Evaluator, scores: Scores, cells: np.ndarray) -> Dict[str, Any]:
    """Tables 1 (Ward, five embeddings), 2 (every method) and 3 (purity)."""
    unsup = scores.unsup[defaults.DEFAULT_AGGREGATE]
    emb = {
        "avg_pool": ev.embed("uniform", unsup),
        "max_hausdorff": scores.haus["max-min/max"],
        "wa_unsup": ev.embed("unsupervised", unsup, defaults.DEFAULT_TAU_UNSUPERVISED),
        "wa_semi": ev.embed("semi", scores.semi[-1], defaults.DEFAULT_TAU_SEMI),
        "wa_mask": ev.embed("mask", unsup, masks=cells),
    }
    metric = {key: "precomputed" if key == "max_hausdorff" else "euclidean" for key in EMBEDDINGS}
    return {
        "table1": {key: ev.report(emb[key], "ward", metric[key]) for key in EMBEDDINGS},
        "table2": {
            method: {key: ev.report(emb[key], method, metric[key]) for key in ("max_hausdorff", "wa_unsup")}
            for method in ev.settings.methods
        },
        "table3": {key: ev.purity(emb[key], metric[key]) for key in EMBEDDINGS},
    }


def _sweeps(ev: Evaluator, scores: Scores, tiers: np.ndarray) -> Dict[str, Any]:
    """Hausdorff variants, tau sweeps, aggregates, normal fractions and score statistics."""
    settings = ev.settings
    variants = {f"{i}/{o}" for i, o in settings.hausdorff_variants}
    # Each tau point is the NMI on all images and, less noisy, the mean NMI over seeded 80 % subsamples.
    subsets = _subsamples(ev.labels.shape[0], settings.n_subsamples, settings.seed)
    semi_full = scores.semi[-1]
    return {
        "hausdorff": {key: ev.report(d, "ward", "precomputed") for key, d in scores.haus.items() if key in variants},
        "tau_unsup": {agg: ev.tau_sweep("unsupervised", scores.unsup[agg], subsets) for agg in ac.AGGREGATES},
        "aggregates": {
            agg: ev.report(ev.embed("unsupervised", scores.unsup[agg], defaults.DEFAULT_TAU_UNSUPERVISED))
            for agg in ac.AGGREGATES
        },
        "tau_semi": ev.tau_sweep("semi", semi_full, subsets),
        "normal_fraction": {
            repr(f): {
                "n_normal": int((tiers <= i).sum()),
                **ev.report(ev.embed("semi", scores.semi[i], defaults.DEFAULT_TAU_SEMI)),
            }
            for i, f in enumerate(settings.normal_fractions)
        },
        "score_stats": {
            **{f"unsup_{agg}": _stats(scores.unsup[agg]) for agg in ac.AGGREGATES},
            "semi": _stats(semi_full),
        },
    }


def good_group(bags: np.ndarray, normal_bags: np.ndarray, labels: np.ndarray, k: int,
               settings: Settings) -> Dict[str, Any]:
    """The estimator's defaults, semi-supervised, with the good group off (K classes) and auto (K-1 defect types).

    Metrics are over every image, the good group (label -1) counting as one
    cluster; precision / recall are those of the good group for the
    defect-free class.
    """
    normal = np.isin(labels, NORMAL_CLASSES)
    out: Dict[str, Any] = {}
    for mode, kk in (("off", k), ("auto", k - int(normal.any()))):
        model = ac.AnomalyClusterer(kk, weights="semi", good_group=mode, seed=settings.seed,
                                    memory_mb=settings.memory_mb).fit(bags, normal_bags=normal_bags)
        rep = ac.clustering_report(labels, model.labels_)
        row = {key: float(rep[key]) for key in METRIC_KEYS}
        good = model.labels_ < 0
        row["good_size"] = int(good.sum())
        row["good_precision"] = float(normal[good].mean()) if good.any() else math.nan
        row["good_recall"] = float(good[normal].mean()) if normal.any() else math.nan
        out[mode] = row
    return out


def _aligned_mask_cells(es: ac.EvalSet, extractor: ac.Extractor) -> np.ndarray:
    """Defect fraction of every patch cell, masks resized and cropped like the images."""
    masks = []
    for path, mask_path in zip(es.paths, es.mask_paths):
        size = None
        if mask_path is not None:
            with Image.open(path) as im:
                size = im.size
        masks.append(load_mask(mask_path, resize=extractor.resize, crop=extractor.crop, image_size=size))
    return mask_cells(masks, extractor.grid)


def _normal_paths(es: ac.EvalSet, settings: Settings) -> List[Path]:
    """The set's normal images, at most ``settings.max_normal`` of them (a seeded subsample, in order)."""
    normal_paths = list(es.normal_paths)
    if settings.max_normal is not None and len(normal_paths) > settings.max_normal:
        keep = np.sort(np.random.default_rng(settings.seed).permutation(len(normal_paths))[: settings.max_normal])
        normal_paths = [normal_paths[i] for i in keep]
    return normal_paths


def run_dataset(
    es: ac.EvalSet,
    extractor: ac.Extractor,
    settings: Settings,
    timer: StageTimer,
    score_cache: Optional[Path] = None,
) -> Dict[str, Any]:
    """All experiments on one evaluation set; returns a JSON-serialisable dict."""
    name = es.name
    normal_paths = _normal_paths(es, settings)
    res: Dict[str, Any] = {
        "n": es.n_images,
        "k": es.k,
        "class_counts": es.class_counts(),
        "preprocess": f"resize {extractor.resize}, crop {extractor.crop}",
        "n_normal": len(normal_paths),
    }
    with timer(name, "extract", f"{es.n_images} + {len(normal_paths)} images"):
        bags = extractor.extract(es.paths)
        normal_bags = extractor.extract(normal_paths)
    with timer(name, "mask weights"):
        cells = _aligned_mask_cells(es, extractor)
    tiers = ac.nested_subsets(len(normal_paths), settings.normal_fractions, settings.seed)
    scores = compute_scores(name, bags, normal_bags, tiers, settings, timer, score_cache)
    ev = Evaluator(bags, np.asarray(es.labels), es.k, settings)
    with timer(name, "evaluate"):
        res.update(_tables_1_to_3(ev, scores, cells))
        res.update(_sweeps(ev, scores, tiers))
    with timer(name, "good group", "two fits of the estimator"):
        res["good_group"] = good_group(bags, normal_bags, np.asarray(es.labels), es.k, settings)
    return res

#!/usr/bin/env python
"""Reproduce the Anomaly Clustering paper's experiments on real data.

Runs the evaluation protocol of Sohn et al. (WACV 2023) on MVTec AD category
folders and on the Magnetic Tile Defect dataset (MTD) and writes Markdown
tables, PNG charts (drawn with Pillow) and a ``results.json`` into ``--out``:

1. ``table1_main.md``: NMI / ARI / F1 micro (= accuracy) / F1 macro of average
   pooling, max-Hausdorff, WA unsupervised, WA semi-supervised and WA with
   ground-truth-mask weights, all with Ward, per dataset and mean, beside
   the paper's WideResNet-50 numbers;
2. ``table2_methods.md``: eight clustering methods x {max-Hausdorff, WA
   unsupervised};
3. ``table3_purity.md`` (+ ``purity_<set>.png``): purity with over-clustering
   (Ward linkage cut at every K): mAUC, R@0.9, R@0.95, R@0.99;
4. ``table5_variants.md``: the six Hausdorff variants and the four
   patch-score aggregates;
5. ``tau.md`` (+ ``tau_unsupervised.png``, ``tau_semi.png``) and
   ``normal_fraction.md`` (+ ``normal_fraction.png``): NMI against the
   softmax temperature and against the share of labelled normal images;
6. ``timing.md``: wall time, CPU time, tracemalloc peak and ru_maxrss per stage;

and ``summary.md`` with everything. Bags come from
:class:`anomclust_lite.features.extractor.Extractor` and its feature cache
(``--cache-dir``, default ``<out>/cache``), so a second run skips extraction;
the score matrices are cached too (``<cache-dir>/scores``, keyed by a sha256
of the bags and settings), so a run after changing ``anomclust_lite/defaults.py``
only redoes the clustering. MVTec images are resized (shorter side 256) and
centre-cropped (224); MTD images are resized whole to 224 x 224 by default
(``--mtd-frame``), because a centre crop of these elongated tiles removes the
whole defect from many images.

Each dataset's patch comparisons are done once: one pass over all image
pairs keeps, for every patch, its best-match similarity in every other
image (an ``(N, M, N)`` float32 array, 1.06 GB for MTD), from which every
score aggregate and every Hausdorff variant is derived (mean-mean is
accumulated in the same pass); one pass over the normal images gives the
semi-supervised scores of all nested normal subsets. These equal
:func:`anomclust_lite.patch_scores`, :func:`anomclust_lite.hausdorff_distances`
and :func:`anomclust_lite.normal_scores` (checked by the tests), which would
need one pass each.

Usage::

    python tools/reproduce.py --shared ../shared \\
        --model ../shared/models/resnet18_l2l3_int8.onnx --model-output relu_43 \\
        --datasets bottle pill mtd --out results/
    python tools/reproduce.py --datasets bottle --out /tmp/smoke --quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import resource
import sys
import time
import tracemalloc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from anomclust_lite.core import defaults  # noqa: E402
from anomclust_lite.files.atomic import atomic_save_npz  # noqa: E402
from anomclust_lite.core.validation import check_int, check_memory_mb  # noqa: E402
from anomclust_lite.cluster.dispatch import METHODS, ClusteringWarning, cluster, linkage_matrix  # noqa: E402
from anomclust_lite.datasets import EvalSet, load_mask, mask_cells, mtd, mvtec_category  # noqa: E402
from anomclust_lite.core.distances import weighted_average  # noqa: E402
from anomclust_lite.metrics import (  # noqa: E402
    clustering_report,
    purity_auc,
    purity_curve,
    reduction_at_purity,
)
from anomclust_lite.report.charts import cluster_colour  # noqa: E402
from anomclust_lite.core.scores import AGGREGATES  # noqa: E402
from anomclust_lite.core.sweeps import (  # noqa: E402
    hausdorff_from_matches,
    nearest_patch_similarities,
    nested_subsets,
    scores_from_matches,
    tiered_normal_scores,
)
from anomclust_lite.core.weights import mask_weights, soft_weights, uniform_weights  # noqa: E402

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
METRIC_NAMES = {"nmi": "NMI", "ari": "ARI", "accuracy": "F1 micro (=acc)", "f1_macro": "F1 macro"}

#: The paper's WideResNet-50 NMI (Table 1): (unsupervised WA, semi-supervised WA).
PAPER_WRN50_NMI = {"bottle": (0.495, 0.607), "pill": (0.469, 0.515), "mtd": (0.179, 0.390)}

# --------------------------------------------------------------------------- stage accounting


@dataclass
class StageRecord:
    """Cost of one stage: wall and CPU seconds, tracemalloc peak, ru_maxrss after it."""

    dataset: str
    stage: str
    wall_s: float
    cpu_s: float
    traced_peak_mib: float
    maxrss_mib: float
    note: str = ""


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StageTimer:
    """Records :class:`StageRecord` s; ``with timer("set", "stage"): ...``."""

    def __init__(self) -> None:
        self.records: List[StageRecord] = []

    @contextmanager
    def __call__(self, dataset: str, stage: str, note: str = "") -> Iterator[None]:
        logger.info("[%s] %s ...", dataset, stage)
        tracemalloc.reset_peak()
        t0, c0 = time.perf_counter(), _cpu_seconds()
        yield
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
        self.records.append(StageRecord(dataset, stage, wall, cpu, peak, _maxrss_mib(), note))
        logger.info("[%s] %s: %.1f s wall, %.1f s CPU, peak %.0f MiB", dataset, stage, wall, cpu, peak)


# --------------------------------------------------------------------------- evaluation


@dataclass
class Settings:
    """What to run; ``quick`` shrinks everything for a smoke run."""

    taus: Tuple[float, ...] = TAU_GRID
    methods: Tuple[str, ...] = METHODS
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


def _report(labels: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    rep = clustering_report(labels, pred)
    return {key: float(rep[key]) for key in METRIC_KEYS}


def _cluster(x: np.ndarray, k: int, method: str, metric: str, seed: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusteringWarning)
        return cluster(x, k, method=method, metric=metric, seed=seed)


def _purity_summary(labels: np.ndarray, x: np.ndarray, metric: str) -> Dict[str, Any]:
    ks, pur = purity_curve(labels, linkage_matrix(x, method="ward", metric=metric))
    n = labels.shape[0]
    out: Dict[str, Any] = {"mauc": purity_auc(ks, pur)}
    for p in PURITY_TARGETS:
        out[f"r@{p}"] = reduction_at_purity(ks, pur, p, n_samples=n)
    out["curve_k"] = ks.tolist()
    out["curve_purity"] = [round(float(v), 5) for v in pur]
    return out


def _aligned_mask_weights(es: EvalSet, extractor: Any) -> np.ndarray:
    """Mask weights on the model's patch grid, masks resized and cropped like the images."""
    masks = []
    for path, mask_path in zip(es.paths, es.mask_paths):
        size = None
        if mask_path is not None:
            with Image.open(path) as im:
                size = im.size
        masks.append(load_mask(mask_path, resize=extractor.resize, crop=extractor.crop, image_size=size))
    return mask_weights(mask_cells(masks, extractor.grid))


SCORE_CACHE_VERSION = 1


def _score_cache_key(bags: np.ndarray, normal_bags: np.ndarray, tiers: np.ndarray, settings: Settings) -> str:
    """sha256 of everything the score matrices depend on."""
    digest = hashlib.sha256()
    for arr in (bags, normal_bags, tiers):
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    meta = {
        "version": SCORE_CACHE_VERSION,
        "q": defaults.DEFAULT_TOPK_FRACTION,
        "variants": [list(v) for v in settings.hausdorff_variants],
        "n_tiers": len(settings.normal_fractions),
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def compute_scores(
    name: str,
    bags: np.ndarray,
    normal_bags: np.ndarray,
    tiers: np.ndarray,
    settings: Settings,
    timer: StageTimer,
    score_cache: Optional[Path],
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray]:
    """Patch scores per aggregate, Hausdorff matrices and tiered normal scores of one set.

    With ``score_cache`` (a folder) the results are stored as
    ``<name>-<key>.npz``, keyed by a sha256 of the bags, the normal
    subsets and the settings, and loaded instead of recomputed when present.
    """
    cache_file = None
    if score_cache is not None:
        with timer(name, "score cache lookup"):
            key = _score_cache_key(bags, normal_bags, tiers, settings)
            cache_file = score_cache / f"{name}-{key[:24]}.npz"
            if cache_file.is_file():
                with np.load(cache_file, allow_pickle=False) as z:
                    scores = {agg: z[f"score:{agg}"] for agg in AGGREGATES}
                    haus = {f[len("haus:"):].replace("|", "/"): z[f] for f in z.files if f.startswith("haus:")}
                    semi = z["semi"]
                logger.info("[%s] scores loaded from %s", name, cache_file)
                return scores, haus, semi

    q = defaults.DEFAULT_TOPK_FRACTION
    want_mm = any(inner == "mean-mean" for inner, _ in settings.hausdorff_variants)
    n = bags.shape[0]
    with timer(name, "unsupervised pass", f"{n * (n - 1) // 2} image pairs, (N, M, N) match tensor"):
        matches = nearest_patch_similarities(bags, memory_mb=settings.memory_mb, mean_mean=want_mm)
    with timer(name, "derive scores + Hausdorff"):
        scores = {agg: scores_from_matches(matches, aggregate=agg, q=q) for agg in AGGREGATES}
        haus = {
            f"{inner}/{outer}": hausdorff_from_matches(matches, inner=inner, outer=outer if outer != "-" else "max")
            for inner, outer in settings.hausdorff_variants
        }
        if "max-min/max" not in haus:
            haus["max-min/max"] = hausdorff_from_matches(matches, inner="max-min", outer="max")
    del matches
    n_tiers = len(settings.normal_fractions)
    n_cmp = n * int((tiers < n_tiers).sum())
    with timer(name, "semi-supervised pass", f"{n_cmp} image pairs, {n_tiers} nested normal subsets"):
        semi = tiered_normal_scores(bags, normal_bags, tiers, n_tiers=n_tiers, memory_mb=settings.memory_mb)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"score:{agg}": v for agg, v in scores.items()}
        arrays.update({f"haus:{k.replace('/', '|')}": v for k, v in haus.items()})
        atomic_save_npz(cache_file, semi=semi, **arrays)
    return scores, haus, semi


def run_dataset(
    es: EvalSet,
    extractor: Any,
    settings: Settings,
    timer: StageTimer,
    score_cache: Optional[Path] = None,
) -> Dict[str, Any]:
    """All experiments on one evaluation set; returns a JSON-serialisable dict."""
    name = es.name
    labels = np.asarray(es.labels)
    k = es.k
    res: Dict[str, Any] = {
        "n": es.n_images,
        "k": k,
        "class_counts": es.class_counts(),
        "preprocess": f"resize {extractor.resize}, crop {extractor.crop}",
    }
    tau_u, tau_s = defaults.DEFAULT_TAU_UNSUPERVISED, defaults.DEFAULT_TAU_SEMI
    agg_default = defaults.DEFAULT_AGGREGATE

    normal_paths = list(es.normal_paths)
    if settings.max_normal is not None and len(normal_paths) > settings.max_normal:
        keep = np.sort(np.random.default_rng(settings.seed).permutation(len(normal_paths))[: settings.max_normal])
        normal_paths = [normal_paths[i] for i in keep]
    res["n_normal"] = len(normal_paths)

    with timer(name, "extract", f"{es.n_images} + {len(normal_paths)} images"):
        bags = extractor.extract(es.paths)
        normal_bags = extractor.extract(normal_paths)
    with timer(name, "mask weights"):
        w_mask = _aligned_mask_weights(es, extractor)

    fractions = settings.normal_fractions
    tiers = nested_subsets(len(normal_paths), fractions, settings.seed)
    scores, haus, semi = compute_scores(name, bags, normal_bags, tiers, settings, timer, score_cache)
    semi_full = semi[-1]

    def wa(weights: np.ndarray) -> np.ndarray:
        return weighted_average(bags, weights)

    def ward_report(x: np.ndarray, metric: str = "euclidean") -> Dict[str, float]:
        return _report(labels, _cluster(x, k, "ward", metric, settings.seed))

    with timer(name, "evaluate"):
        emb = {
            "avg_pool": wa(uniform_weights(*bags.shape[:2])),
            "wa_unsup": wa(soft_weights(scores[agg_default], tau_u)),
            "wa_semi": wa(soft_weights(semi_full, tau_s)),
            "wa_mask": wa(w_mask),
        }
        res["table1"] = {
            "avg_pool": ward_report(emb["avg_pool"]),
            "max_hausdorff": ward_report(haus["max-min/max"], "precomputed"),
            "wa_unsup": ward_report(emb["wa_unsup"]),
            "wa_semi": ward_report(emb["wa_semi"]),
            "wa_mask": ward_report(emb["wa_mask"]),
        }
        res["table2"] = {
            method: {
                "max_hausdorff": _report(
                    labels, _cluster(haus["max-min/max"], k, method, "precomputed", settings.seed)
                ),
                "wa_unsup": _report(labels, _cluster(emb["wa_unsup"], k, method, "euclidean", settings.seed)),
            }
            for method in settings.methods
        }
        res["table3"] = {
            "avg_pool": _purity_summary(labels, emb["avg_pool"], "euclidean"),
            "max_hausdorff": _purity_summary(labels, haus["max-min/max"], "precomputed"),
            "wa_unsup": _purity_summary(labels, emb["wa_unsup"], "euclidean"),
            "wa_semi": _purity_summary(labels, emb["wa_semi"], "euclidean"),
            "wa_mask": _purity_summary(labels, emb["wa_mask"], "euclidean"),
        }
        res["hausdorff"] = {
            key: ward_report(d, "precomputed")
            for key, d in haus.items()
            if key in {f"{i}/{o}" for i, o in settings.hausdorff_variants}
        }
        # Tau sweeps: every aggregate (unsupervised) and the full normal set (semi). Each point
        # is the NMI on all images and, less noisy, the mean NMI over seeded 80 % subsamples.
        subsets = _subsamples(labels.shape[0], settings.n_subsamples, settings.seed)

        def sweep(s: np.ndarray) -> Dict[str, List[float]]:
            out = {}
            for t in settings.taus:
                e = wa(soft_weights(s, t))
                sub = [_report(labels[i], _cluster(e[i], k, "ward", "euclidean", settings.seed))["nmi"] for i in subsets]
                out[repr(t)] = [ward_report(e)["nmi"], float(np.mean(sub)) if sub else math.nan]
            return out

        res["tau_unsup"] = {agg: sweep(scores[agg]) for agg in AGGREGATES}
        res["aggregates"] = {agg: ward_report(wa(soft_weights(scores[agg], tau_u))) for agg in AGGREGATES}
        res["tau_semi"] = sweep(semi_full)
        res["normal_fraction"] = {
            repr(f): {
                "n_normal": int((tiers <= i).sum()),
                **ward_report(wa(soft_weights(semi[i], tau_s))),
            }
            for i, f in enumerate(fractions)
        }
        # Scale of the scores, for reading tau: patch-score spread per image set.
        res["score_stats"] = {
            **{f"unsup_{agg}": _stats(scores[agg]) for agg in AGGREGATES},
            "semi": _stats(semi_full),
        }
    return res


def _subsamples(n: int, count: int, seed: int) -> List[np.ndarray]:
    """``count`` seeded, sorted subsets of 80 % of ``range(n)``."""
    rng = np.random.default_rng([seed, 80])
    return [np.sort(rng.permutation(n)[: int(0.8 * n)]) for _ in range(count)]


def _stats(s: np.ndarray) -> Dict[str, float]:
    return {
        "mean": float(s.mean()),
        "std": float(s.std()),
        "std_within_image": float(s.std(axis=1).mean()),
        "p99_minus_median_within_image": float(np.mean(np.percentile(s, 99, axis=1) - np.median(s, axis=1))),
    }


# --------------------------------------------------------------------------- charts (Pillow only)


def line_chart(
    series: Sequence[Tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    y_range: Tuple[float, float] = (0.0, 1.0),
    size: Tuple[int, int] = (720, 440),
) -> Image.Image:
    """Draw named ``(x, y)`` series as a line chart with markers and a legend."""
    width, height = size
    left, right, top, bottom = 64, 170, 36, 52
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs_all = [x for _, xs, _ in series for x in xs]
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    x0, x1 = tx(min(xs_all)), tx(max(xs_all))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = y_range

    def px(v: float) -> float:
        return left + (tx(v) - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for i in range(6):
        v = y0 + (y1 - y0) * i / 5
        draw.line([left, py(v), width - right, py(v)], fill=(225, 225, 225))
        draw.text((8, py(v) - 6), f"{v:.2f}", fill=(0, 0, 0), font=font)
    ticks = sorted(set(xs_all))
    if len(ticks) > 8:  # many points: round ticks instead (1-2-5 per decade, or steps of a fifth)
        lo, hi = min(xs_all), max(xs_all)
        if log_x:
            decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            ticks = [m * 10.0**e for e in decades for m in (1, 2, 5) if lo <= m * 10.0**e <= hi * (1 + 1e-9)]
        else:
            step = 10 ** math.floor(math.log10(hi - lo)) if hi > lo else 1.0
            step = step * 2 if (hi - lo) / step > 5 else step / 5 if (hi - lo) / step < 2 else step
            ticks = [v * step for v in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    for v in ticks:
        draw.line([px(v), height - bottom, px(v), height - bottom + 4], fill=(0, 0, 0))
        draw.text((px(v) - 12, height - bottom + 8), f"{v:.3g}", fill=(0, 0, 0), font=font)
    draw.text((left, 10), title, fill=(0, 0, 0), font=font)
    draw.text(((width - right + left) // 2 - 40, height - 20), x_label, fill=(0, 0, 0), font=font)
    draw.text((8, top - 16), y_label, fill=(0, 0, 0), font=font)
    for i, (name, xs, ys) in enumerate(series):
        colour = cluster_colour(i)
        pts = [(px(x), py(min(max(y, y0), y1))) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        if len(pts) <= 30:
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 8 + 16 * i
        draw.line([width - right + 10, ly + 6, width - right + 30, ly + 6], fill=colour, width=3)
        draw.text((width - right + 36, ly), name, fill=(0, 0, 0), font=font)
    return img


# --------------------------------------------------------------------------- Markdown


def _f(v: Optional[float], digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _mean(values: Sequence[float]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


T1_ROWS = (
    ("avg_pool", "Average pooling (uniform weights)"),
    ("max_hausdorff", "Max-Hausdorff"),
    ("wa_unsup", "WA unsupervised"),
    ("wa_semi", "WA semi-supervised"),
    ("wa_mask", "WA ground-truth-mask weights"),
)

SHORT_NAMES = {
    "avg_pool": "avg pooling",
    "max_hausdorff": "max-Hausdorff",
    "wa_unsup": "WA unsup",
    "wa_semi": "WA semi",
    "wa_mask": "WA GT mask",
}


def table1_md(results: Dict[str, Dict[str, Any]]) -> str:
    names = list(results)
    out = [
        "## Table 1 analogue: main results (Ward)\n",
        f"WA unsupervised: aggregate `{defaults.DEFAULT_AGGREGATE}`, tau = {defaults.DEFAULT_TAU_UNSUPERVISED}; "
        f"WA semi-supervised: tau = {defaults.DEFAULT_TAU_SEMI}.\n",
    ]
    for key in METRIC_KEYS:
        rows = []
        for row_key, row_name in T1_ROWS:
            vals = [results[n]["table1"][row_key][key] for n in names]
            rows.append([row_name] + [_f(v) for v in vals] + [_f(_mean(vals))])
        if key == "nmi":
            for j, label in enumerate(("WA unsupervised", "WA semi-supervised")):
                vals = [PAPER_WRN50_NMI.get(n, (None, None))[j] for n in names]
                rows.append([f"*paper, WRN-50: {label}*"] + [_f(v) for v in vals] + [_f(_mean(vals))])
        out.append(f"### {METRIC_NAMES[key]}\n\n" + _table(["method"] + names + ["mean"], rows))
    return "\n".join(out)


def table2_md(results: Dict[str, Dict[str, Any]]) -> str:
    names = list(results)
    methods = list(next(iter(results.values()))["table2"])
    out = ["## Table 2 analogue: clustering methods\n"]
    for key in ("nmi", "ari"):
        header = ["method"]
        for n in names:
            header += [f"{n} Haus", f"{n} WA"]
        header += ["mean Haus", "mean WA"]
        rows = []
        for m in methods:
            row = [m]
            hs, ws = [], []
            for n in names:
                h = results[n]["table2"][m]["max_hausdorff"][key]
                w = results[n]["table2"][m]["wa_unsup"][key]
                hs.append(h)
                ws.append(w)
                row += [_f(h), _f(w)]
            rows.append(row + [_f(_mean(hs)), _f(_mean(ws))])
        out.append(
            f"### {METRIC_NAMES[key]} (Haus = max-Hausdorff distances; WA = WA unsupervised embeddings)\n\n"
            + _table(header, rows)
        )
    return "\n".join(out)


def table3_md(results: Dict[str, Dict[str, Any]]) -> str:
    rows = []
    labels = dict(T1_ROWS)
    for n, res in results.items():
        for key, summ in res["table3"].items():
            rows.append(
                [n, labels[key], _f(summ["mauc"])] + [_f(summ[f"r@{p}"]) for p in PURITY_TARGETS]
            )
    for key, label in T1_ROWS:
        vals = [res["table3"][key] for res in results.values()]
        rows.append(
            ["**mean**", label, _f(_mean([v["mauc"] for v in vals]))]
            + [_f(_mean([v[f"r@{p}"] for v in vals])) for p in PURITY_TARGETS]
        )
    header = ["dataset", "embedding", "mAUC"] + [f"R@{p}" for p in PURITY_TARGETS]
    return (
        "## Table 3 analogue: purity with over-clustering (Ward linkage cut at every K)\n\n"
        "mAUC: mean purity over K/N; R@P: 1 - K_min/N at the smallest K reaching purity P.\n\n"
        + _table(header, rows)
    )


def table5_md(results: Dict[str, Dict[str, Any]]) -> str:
    names = list(results)
    variants = list(next(iter(results.values()))["hausdorff"])
    rows = []
    for v in variants:
        vals = [results[n]["hausdorff"][v]["nmi"] for n in names]
        rows.append([v] + [_f(x) for x in vals] + [_f(_mean(vals))])
    out = [
        "## Table 5 analogue: bag distances and score aggregates (Ward, NMI)\n",
        "### Hausdorff variants (inner/outer; '-' = symmetric inner)\n\n" + _table(["variant"] + names + ["mean"], rows),
    ]
    rows = []
    for agg in AGGREGATES:
        vals = [results[n]["aggregates"][agg]["nmi"] for n in names]
        best = [max(v[0] for v in results[n]["tau_unsup"][agg].values()) for n in names]
        rows.append(
            [agg + (f" (q={defaults.DEFAULT_TOPK_FRACTION})" if agg == "topk_mean" else "")]
            + [_f(x) for x in vals]
            + [_f(_mean(vals))]
            + [_f(_mean(best))]
        )
    out.append(
        f"### WA unsupervised, patch-score aggregate (tau = {defaults.DEFAULT_TAU_UNSUPERVISED}; last column: "
        "mean of each dataset's best tau in the grid, an oracle)\n\n"
        + _table(["aggregate"] + names + ["mean", "mean (best tau per set)"], rows)
    )
    return "\n".join(out)


def tau_md(results: Dict[str, Dict[str, Any]]) -> str:
    names = list(results)
    taus = list(next(iter(results.values()))["tau_semi"])
    agg0 = defaults.DEFAULT_AGGREGATE
    out = [
        "## Tau sensitivity (Figure 6 analogue; Ward NMI; tau in patch-distance units)\n",
        "Each cell: NMI on all images; `sub`: mean NMI over seeded 80 % subsamples of the images "
        "(less noisy; the defaults were chosen on it).\n",
    ]

    def block(get: Any) -> List[List[str]]:
        rows = []
        for t in taus:
            full = [get(n, t)[0] for n in names]
            sub = [get(n, t)[1] for n in names]
            rows.append([t] + [_f(v) for v in full] + [_f(_mean(full)), _f(_mean(sub))])
        return rows

    header = ["tau"] + names + ["mean", "mean (sub)"]
    rows = block(lambda n, t: results[n]["tau_unsup"][agg0][t])
    out.append(f"### Unsupervised, aggregate `{agg0}`\n\n" + _table(header, rows))
    rows = block(lambda n, t: results[n]["tau_semi"][t])
    out.append("### Semi-supervised (all labelled normal images)\n\n" + _table(header, rows))
    rows = []
    for t in taus:
        row = [t]
        for agg in AGGREGATES:
            full = _mean([results[n]["tau_unsup"][agg][t][0] for n in names])
            sub = _mean([results[n]["tau_unsup"][agg][t][1] for n in names])
            row.append(f"{_f(full)} / {_f(sub)}")
        rows.append(row)
    out.append(
        "### Unsupervised, every aggregate: mean over datasets (all images / sub)\n\n"
        + _table(["tau"] + list(AGGREGATES), rows)
    )
    return "\n".join(out)


def normal_fraction_md(results: Dict[str, Dict[str, Any]]) -> str:
    names = list(results)
    fracs = list(next(iter(results.values()))["normal_fraction"])
    rows = []
    for f in fracs:
        vals = [results[n]["normal_fraction"][f]["nmi"] for n in names]
        counts = [str(results[n]["normal_fraction"][f]["n_normal"]) for n in names]
        rows.append([f"{float(f) * 100:g} %"] + [f"{_f(v)} ({c})" for v, c in zip(vals, counts)] + [_f(_mean(vals))])
    return (
        "## Labelled normal images (Figure 8 analogue; WA semi-supervised, Ward NMI)\n\n"
        f"Nested seeded subsamples of the normal set; tau = {defaults.DEFAULT_TAU_SEMI}. "
        "In brackets: number of normal images.\n\n" + _table(["share"] + names + ["mean"], rows)
    )


def timing_md(records: Sequence[StageRecord], total_wall: float, total_cpu: float) -> str:
    rows = [
        [r.dataset, r.stage, f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{r.traced_peak_mib:.0f}", f"{r.maxrss_mib:.0f}", r.note]
        for r in records
    ]
    rows.append(["**total**", "", f"{total_wall:.1f}", f"{total_cpu:.1f}", "", f"{_maxrss_mib():.0f}", ""])
    return (
        "## Time and memory per stage\n\n"
        f"Machine: {os.cpu_count()} logical CPUs. Peak = `tracemalloc` peak of the stage (NumPy and Python "
        "allocations; not onnxruntime's own memory); maxrss = `resource.getrusage(RUSAGE_SELF).ru_maxrss` of "
        "the process after the stage (a high-water mark over the whole run so far). CPU = user + system "
        "seconds of the process.\n\n"
        + _table(["dataset", "stage", "wall s", "CPU s", "peak MiB (tracemalloc)", "maxrss MiB", "note"], rows)
    )


def write_charts(results: Dict[str, Dict[str, Any]], out: Path) -> List[str]:
    """PNG charts; returns the file names written."""
    written = []
    names = list(results)
    taus = [float(t) for t in next(iter(results.values()))["tau_semi"]]
    agg = defaults.DEFAULT_AGGREGATE
    for kind, key in (("unsupervised", "tau_unsup"), ("semi", "tau_semi")):
        series = []
        sub = []
        for n in names:
            d = results[n][key][agg] if key == "tau_unsup" else results[n][key]
            series.append((n, taus, [d[repr(t)][0] for t in taus]))
            sub.append([d[repr(t)][1] for t in taus])
        if len(series) > 1:
            series.append(("mean", taus, [float(np.mean([s[2][i] for s in series])) for i in range(len(taus))]))
        series.append(("mean, 80% subsets", taus, np.mean(np.asarray(sub), axis=0).tolist()))
        title = f"NMI vs tau, {'unsupervised (' + agg + ')' if kind == 'unsupervised' else 'semi-supervised'}"
        fname = f"tau_{kind}.png"
        line_chart(series, title=title, x_label="tau (log scale)", y_label="NMI", log_x=len(taus) > 1).save(out / fname)
        written.append(fname)
    fracs = [float(f) for f in next(iter(results.values()))["normal_fraction"]]
    series = [(n, fracs, [results[n]["normal_fraction"][repr(f)]["nmi"] for f in fracs]) for n in names]
    line_chart(
        series, title="NMI vs share of labelled normal images", x_label="share (log scale)", y_label="NMI",
        log_x=len(fracs) > 1,
    ).save(out / "normal_fraction.png")
    written.append("normal_fraction.png")
    for n in names:
        series = []
        for key, summ in results[n]["table3"].items():
            ks = np.asarray(summ["curve_k"], dtype=float)
            series.append((SHORT_NAMES[key], (ks / ks[-1]).tolist(), summ["curve_purity"]))
        fname = f"purity_{n}.png"
        line_chart(
            series, title=f"Purity vs K/N, {n} (Ward)", x_label="K / N", y_label="purity"
        ).save(out / fname)
        written.append(fname)
    return written


# --------------------------------------------------------------------------- CLI


def _default_shared() -> Path:
    env = os.environ.get("ANOMCLUST_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Reproduce the Anomaly Clustering paper's tables on MVTec AD categories and MTD.",
    )
    p.add_argument("--shared", type=Path, default=None, help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    p.add_argument("--model", type=Path, default=None, help="ONNX feature extractor (default <shared>/models/resnet18_l2l3_int8.onnx)")
    p.add_argument("--model-output", default="relu_43", help="model output to use (default relu_43)")
    p.add_argument(
        "--datasets", nargs="*", default=None,
        help="'mtd' or MVTec categories under <shared>/data/mvtec (default: bottle pill mtd, "
        "or none when --mvtec-category is given)",
    )
    p.add_argument("--mvtec-category", type=Path, action="append", default=[], help="extra MVTec-layout category folder (repeatable)")
    p.add_argument("--mtd-root", type=Path, default=None, help="MTD folder (default <shared>/data/mtd)")
    p.add_argument(
        "--mtd-frame", choices=("whole", "crop"), default="whole",
        help="MTD preprocessing: 'whole' resizes the whole image to 224x224 (default: MTD images are "
        "not square and their defects often lie near the ends, which a centre crop cuts off); 'crop' "
        "resizes the shorter side to 256 and centre-crops 224, as for MVTec",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder for the tables, charts and results.json")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default <out>/cache)")
    p.add_argument(
        "--no-score-cache", action="store_true",
        help="do not store/reuse the score matrices in <cache-dir>/scores (keyed by a hash of the bags and settings)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 3 taus, 2 methods, 1 Hausdorff variant, <= 20 normals")
    p.add_argument("--max-normal", type=int, default=None, help="use at most this many (seeded) normal images per set")
    p.add_argument("--seed", type=int, default=0, help="seed of the clusterers and the normal subsamples")
    p.add_argument("--memory-mb", type=float, default=defaults.DEFAULT_MEMORY_MB, help="kernel working-memory budget")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: onnxruntime's)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p.parse_args(argv)


def _eval_sets(args: argparse.Namespace, shared: Path) -> List[EvalSet]:
    sets: List[EvalSet] = []
    names = args.datasets
    if names is None:
        names = [] if args.mvtec_category else ["bottle", "pill", "mtd"]
    for name in names:
        if name == "mtd":
            sets.append(mtd(args.mtd_root or shared / "data" / "mtd"))
        else:
            sets.append(mvtec_category(shared / "data" / "mvtec" / name))
    for path in args.mvtec_category:
        sets.append(mvtec_category(path))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets must have distinct names; got {names}")
    if not sets:
        raise ValueError("no datasets given: use --datasets and/or --mvtec-category")
    return sets


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the reproduction; returns the process exit status."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from anomclust_lite.features.extractor import Extractor

    shared = args.shared or _default_shared()
    model = args.model or shared / "models" / "resnet18_l2l3_int8.onnx"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.quick() if args.quick else Settings()
    if args.max_normal is not None:
        settings.max_normal = check_int(args.max_normal, "--max-normal", low=1)
    settings.seed = args.seed
    # The sweeps always include the defaults, so the tables show them.
    settings.taus = tuple(
        sorted(set(settings.taus) | {defaults.DEFAULT_TAU_UNSUPERVISED, defaults.DEFAULT_TAU_SEMI})
    )
    settings.memory_mb = check_memory_mb(args.memory_mb, "--memory-mb")

    tracemalloc.start()
    t_start, c_start = time.perf_counter(), _cpu_seconds()
    timer = StageTimer()
    try:
        sets = _eval_sets(args, shared)
        cache_dir = args.cache_dir or out / "cache"
        with timer("-", "load model"):
            extractor = Extractor(model, output=args.model_output, cache_dir=cache_dir, threads=args.threads)
            whole = Extractor(
                model, output=args.model_output, resize=224, crop=None, cache_dir=cache_dir, threads=args.threads
            )
        results: Dict[str, Dict[str, Any]] = {}
        for es in sets:
            print(f"[reproduce] {es.name}: N={es.n_images}, K={es.k}, {len(es.normal_paths)} normal", file=sys.stderr)
            ext = whole if (es.name == "mtd" and args.mtd_frame == "whole") else extractor
            score_cache = None if args.no_score_cache else cache_dir / "scores"
            results[es.name] = run_dataset(es, ext, settings, timer, score_cache)
        total_wall, total_cpu = time.perf_counter() - t_start, _cpu_seconds() - c_start
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"reproduce.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        tracemalloc.stop()

    parts = {
        "table1_main.md": table1_md(results),
        "table2_methods.md": table2_md(results),
        "table3_purity.md": table3_md(results),
        "table5_variants.md": table5_md(results),
        "tau.md": tau_md(results),
        "normal_fraction.md": normal_fraction_md(results),
        "timing.md": timing_md(timer.records, total_wall, total_cpu),
    }
    for fname, text in parts.items():
        (out / fname).write_text(text, encoding="utf-8")
    charts = write_charts(results, out)
    command = "python tools/reproduce.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    header = (
        "# Reproduction of Anomaly Clustering (Sohn et al., WACV 2023)\n\n"
        f"Command: `{command}`\n\n"
        f"Model: `{extractor.model_path.name}` output `{extractor.output}` (sha256 {extractor.model_hash[:12]}...), "
        f"grid {extractor.grid}, D = {extractor.dim}. "
        f"Seed {settings.seed}. {'QUICK mode. ' if args.quick else ''}"
        f"Defaults: tau_unsup = {defaults.DEFAULT_TAU_UNSUPERVISED}, tau_semi = {defaults.DEFAULT_TAU_SEMI}, "
        f"aggregate = {defaults.DEFAULT_AGGREGATE} (q = {defaults.DEFAULT_TOPK_FRACTION}).\n\n"
        + "".join(
            f"- {n}: N = {r['n']}, K = {r['k']}, {r['n_normal']} normal images, {r['preprocess']}; "
            f"{r['class_counts']}\n"
            for n, r in results.items()
        )
        + "\nCharts: " + ", ".join(f"`{c}`" for c in charts) + "\n\n"
    )
    (out / "summary.md").write_text(header + "\n".join(parts.values()), encoding="utf-8")
    payload = {
        "command": command,
        "settings": {
            "taus": list(settings.taus),
            "methods": list(settings.methods),
            "hausdorff_variants": [list(v) for v in settings.hausdorff_variants],
            "normal_fractions": list(settings.normal_fractions),
            "max_normal": settings.max_normal,
            "seed": settings.seed,
            "tau_unsupervised": defaults.DEFAULT_TAU_UNSUPERVISED,
            "tau_semi": defaults.DEFAULT_TAU_SEMI,
            "aggregate": defaults.DEFAULT_AGGREGATE,
            "topk_fraction": defaults.DEFAULT_TOPK_FRACTION,
        },
        "extractor": extractor.describe(),
        "results": results,
        "timing": [r.__dict__ for r in timer.records],
        "total_wall_s": total_wall,
        "total_cpu_s": total_cpu,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    print(f"[reproduce] wrote {out} in {total_wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

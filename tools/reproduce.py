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
:class:`anomclust_lite.Extractor` and its feature cache (``--cache-dir``,
default ``<out>/cache``), so a second run skips extraction; the score
matrices are kept in the same cache format (``<cache-dir>/scores``, keyed by
a sha256 of the bags and settings), so a run after changing
``anomclust_lite/core/defaults.py`` only redoes the clustering. MVTec images
are resized (shorter side 256) and centre-cropped (224); MTD images are
resized whole to 224 x 224 by default (``--mtd-frame``), because a centre
crop of these elongated tiles removes the whole defect from many images.
The experiments themselves live in ``tools/_reproduce/``.

Usage::

    python tools/reproduce.py --shared ../shared \\
        --model ../shared/models/resnet18_l2l3_int8.onnx --model-output relu_43 \\
        --datasets bottle pill mtd --out results/
    python tools/reproduce.py --datasets bottle --out /tmp/smoke --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import anomclust_lite as ac
from anomclust_lite.core import defaults

from _reproduce.charts import write_charts
from _reproduce.experiments import Settings, run_dataset
from _reproduce.tables import all_tables
from _reproduce.timing import StageTimer, cpu_seconds

Results = Dict[str, Dict[str, Any]]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


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
    p.add_argument("--max-normal", type=_positive_int, default=None, help="use at most this many (seeded) normal images per set")
    p.add_argument("--seed", type=int, default=0, help="seed of the clusterers and the normal subsamples")
    p.add_argument("--memory-mb", type=_positive_float, default=defaults.DEFAULT_MEMORY_MB, help="kernel working-memory budget")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: onnxruntime's)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings()
    if args.max_normal is not None:
        settings.max_normal = args.max_normal
    settings.seed = args.seed
    # The sweeps (absolute tau values) always include the absolute defaults, so the tables show them;
    # a relative default ("0.4x", semi-supervised) is shown in the tables at the defaults instead.
    numeric = {t for t in (defaults.DEFAULT_TAU_UNSUPERVISED, defaults.DEFAULT_TAU_SEMI) if not isinstance(t, str)}
    settings.taus = tuple(sorted(set(settings.taus) | numeric))
    settings.memory_mb = args.memory_mb
    return settings


def _eval_sets(args: argparse.Namespace, shared: Path) -> List[ac.EvalSet]:
    sets: List[ac.EvalSet] = []
    names = args.datasets
    if names is None:
        names = [] if args.mvtec_category else ["bottle", "pill", "mtd"]
    for name in names:
        if name == "mtd":
            sets.append(ac.mtd(args.mtd_root or shared / "data" / "mtd"))
        else:
            sets.append(ac.mvtec_category(shared / "data" / "mvtec" / name))
    for path in args.mvtec_category:
        sets.append(ac.mvtec_category(path))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets must have distinct names; got {names}")
    if not sets:
        raise ValueError("no datasets given: use --datasets and/or --mvtec-category")
    return sets


def _run(args: argparse.Namespace, settings: Settings, timer: StageTimer) -> Tuple[Results, ac.Extractor]:
    """Every experiment on every set: ``(results per set, the MVTec extractor)``."""
    shared = ac.shared_root(args.shared)
    model = args.model or shared / "models" / "resnet18_l2l3_int8.onnx"
    sets = _eval_sets(args, shared)
    cache_dir = args.cache_dir or args.out / "cache"
    with timer("-", "load model"):
        extractor = ac.Extractor(model, output=args.model_output, cache_dir=cache_dir, threads=args.threads)
        whole = ac.Extractor(
            model, output=args.model_output, resize=224, crop=None, cache_dir=cache_dir, threads=args.threads
        )
    results: Results = {}
    for es in sets:
        print(f"[reproduce] {es.name}: N={es.n_images}, K={es.k}, {len(es.normal_paths)} normal", file=sys.stderr)
        ext = whole if (es.name == "mtd" and args.mtd_frame == "whole") else extractor
        score_cache = None if args.no_score_cache else cache_dir / "scores"
        results[es.name] = run_dataset(es, ext, settings, timer, score_cache)
    return results, extractor


def _summary_header(command: str, extractor: ac.Extractor, settings: Settings, quick: bool,
                    results: Results, charts: List[str]) -> str:
    return (
        "# Reproduction of Anomaly Clustering (Sohn et al., WACV 2023)\n\n"
        f"Command: `{command}`\n\n"
        f"Model: `{extractor.model_path.name}` output `{extractor.output}` (sha256 {extractor.model_hash[:12]}...), "
        f"grid {extractor.grid}, D = {extractor.dim}. "
        f"Seed {settings.seed}. {'QUICK mode. ' if quick else ''}"
        f"Defaults: tau_unsup = {defaults.DEFAULT_TAU_UNSUPERVISED}, tau_semi = {defaults.DEFAULT_TAU_SEMI}, "
        f"aggregate = {defaults.DEFAULT_AGGREGATE} (q = {defaults.DEFAULT_TOPK_FRACTION}).\n\n"
        + "".join(
            f"- {n}: N = {r['n']}, K = {r['k']}, {r['n_normal']} normal images, {r['preprocess']}; "
            f"{r['class_counts']}\n"
            for n, r in results.items()
        )
        + "\nCharts: " + ", ".join(f"`{c}`" for c in charts) + "\n\n"
    )


def _settings_record(settings: Settings) -> Dict[str, Any]:
    return {
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
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the reproduction; returns the process exit status."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(args)
    tracemalloc.start()
    t_start, c_start = time.perf_counter(), cpu_seconds()
    timer = StageTimer()
    try:
        results, extractor = _run(args, settings, timer)
        total_wall, total_cpu = time.perf_counter() - t_start, cpu_seconds() - c_start
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"reproduce.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        tracemalloc.stop()

    parts = all_tables(results, timer.records, total_wall, total_cpu)
    for fname, text in parts.items():
        (out / fname).write_text(text, encoding="utf-8")
    charts = write_charts(results, out)
    command = "python tools/reproduce.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    header = _summary_header(command, extractor, settings, args.quick, results, charts)
    (out / "summary.md").write_text(header + "\n".join(parts.values()), encoding="utf-8")
    payload = {
        "command": command,
        "settings": _settings_record(settings),
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

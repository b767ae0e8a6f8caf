#!/usr/bin/env python
"""Good group and anomaly score against the coreset vs against the 64-image normal bank (issue 18).

Fits ``AnomalyClusterer(K, weights="semi", good_group="auto")`` (K = the number
of defect types) on one evaluation set (MVTec AD bottle or pill, MTD; the
protocol of :mod:`anomclust_lite.datasets`, every labelled normal image given)
and prints one JSON line: fit wall time, the stage timings, NMI / ARI /
accuracy / F1 with the good group counted as a cluster (as the reproduction's
``good_group``), the good group's size, precision and recall, the good/defect
AUROC of ``anomaly_scores_``, the threshold, the size of the saved model and
the time ``assign`` takes for ``--assign`` of the labelled normal images (new
to the model: scored against the normal bank, and their novelty measured).
Run it with the code to compare on ``PYTHONPATH`` (e.g. main and a branch) and
compare the lines; ``--exact`` fits with every approximation off.
The stages this compares are ``timings["scoring"]`` (coreset, scores, anomaly
scores, good-group calibration) and ``timings["novelty"]`` (the novelty
reference, whole images or a coreset of their patches, and its calibration).

Usage::

    python tools/bench_trust_bank.py --cache-dir /work/feats/r50v2_layer2 --set bottle [--exact] [--per-class 30] [--assign 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

import anomclust_lite as ac

NORMAL_CLASSES = ("good", "Free")
METRIC_KEYS = ("nmi", "ari", "accuracy", "f1_macro")


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, choices=("bottle", "pill", "mtd"))
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--per-class", type=int, default=0, help="at most this many images of each class (seeded)")
    ap.add_argument("--assign", type=int, default=50, help="labelled normal images assigned after the fit (default 50)")
    args = ap.parse_args()
    shared = ac.shared_root(args.shared)
    if args.set == "mtd":
        es, resize, crop = ac.mtd(shared / "data" / "mtd"), 224, None
    else:
        es, resize, crop = ac.mvtec_category(shared / "data" / "mvtec" / args.set), 256, 224
    ex = ac.Extractor(str(shared / "models" / "resnet50v2_layer2_fp32.onnx"), output="layer2", resize=resize,
                      crop=crop, cache_dir=args.cache_dir)
    if args.per_class:
        lab = np.array(es.labels)
        rng = np.random.default_rng(args.seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(lab == c))[: args.per_class] for c in es.classes]))
        es = ac.EvalSet(es.name, tuple(es.paths[i] for i in keep), tuple(es.labels[i] for i in keep),
                        es.normal_paths, tuple(es.mask_paths[i] for i in keep))
    bags, normals = ex.extract(list(es.paths)), ex.extract(list(es.normal_paths))
    labels = np.array(es.labels)
    normal = np.isin(labels, NORMAL_CLASSES)
    k = len(es.classes) - int(normal.any())
    t0 = time.perf_counter()
    model = ac.AnomalyClusterer(k, weights="semi", good_group="auto", seed=args.seed, exact=args.exact)
    model.fit(bags, normal_bags=normals)
    wall = time.perf_counter() - t0
    rep = ac.clustering_report(labels, model.labels_)
    good = model.labels_ < 0
    row = {"set": args.set, "exact": args.exact,
           "n": int(labels.size), "normals": int(normals.shape[0]), "fit_s": round(wall, 1),
           "timings": {key: round(v, 1) for key, v in model.timings_.items()}}
    row.update({key: round(float(rep[key]), 4) for key in METRIC_KEYS})
    row.update(good_size=int(good.sum()), good_precision=round(float(normal[good].mean()), 4) if good.any() else None,
               good_recall=round(float(good[normal].mean()), 4),
               auroc=round(auroc(model.anomaly_scores_[~normal], model.anomaly_scores_[normal]), 4),
               threshold=model.good_threshold_)
    t0 = time.perf_counter()
    model.assign(normals[: args.assign])
    row["assign_s"] = round(time.perf_counter() - t0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        model.save(path)
        row["model_mb"] = round(os.path.getsize(path) / 2**20, 1)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Compact normal bank (greedy k-centre coreset) vs the exact bank, semi-supervised (Eq. 6).

For each evaluation set (MVTec AD bottle and pill, MTD; the paper's protocol of
:mod:`anomclust_lite.datasets`, all labelled normal images as the bank) and each
coreset size, it prints:

- **time**: selection seconds and scoring seconds of every image against the
  coreset, against the exact scoring of every image against the whole bank;
  ``x full`` = exact / (selection + coreset scoring) over all images. The exact
  full-set time is measured in this run unless ``--work`` holds it from an
  earlier run (MTD's exact scoring takes 30-90 min on 2 shared cores; the line
  says which). ``x run`` is always measured in this run: exact vs coreset
  scoring of the same ``--time-images`` images, the selection counted at its
  share (``time-images / N``) of one selection per fit;
- **accuracy**: NMI and ARI of Ward with the true K on the semi-supervised
  weighted-average embeddings (means over the default ``tau`` and its
  neighbours and ``--repeats`` 80 % subsamples, since one run moves by
  +-0.05; the single full-set run beside them), and the good/defect AUROC of
  the image anomaly score (mean of the top patch scores), each as the
  coreset's value minus the exact one. The embeddings go through the
  nuisance projection as in the estimator (``--project-out``, default
  ``auto``; ``0`` is the paper's method).

MTD's exact scoring (582 x 762 image pairs) takes 30-90 min on 2 shared cores;
``--mtd-per-class 40`` clusters a seeded 40 images per class (232 images, the
bank still all 762 normal images).

Usage::

    python tools/bench_coreset.py --cache-dir /work/feats/r50v2_layer2 --work /tmp/bench_coreset \\
        [--sets bottle pill mtd] [--sizes 0.01 0.025 0.05 0.1 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import rankdata

import anomclust_lite as ac

GOOD_CLASSES = ("good", "Free")


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def per_class(es: ac.EvalSet, cap: int, seed: int) -> ac.EvalSet:
    """``es`` with at most ``cap`` images of each class (a seeded choice; all when ``cap`` is 0)."""
    if not cap:
        return es
    lab = np.array(es.labels)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(lab == c))[:cap] for c in es.classes]))
    return ac.EvalSet(es.name, tuple(es.paths[i] for i in keep), tuple(es.labels[i] for i in keep),
                      es.normal_paths, tuple(es.mask_paths[i] for i in keep))


def load_set(args: argparse.Namespace, name: str) -> Tuple[ac.EvalSet, np.ndarray, np.ndarray]:
    """The evaluation set, its bags and its normal bags (float32, through the feature cache)."""
    shared = ac.shared_root(args.shared)
    if name == "mtd":
        es, resize, crop = per_class(ac.mtd(shared / "data" / "mtd"), args.mtd_per_class, args.seed), 224, None
    else:
        es, resize, crop = ac.mvtec_category(shared / "data" / "mvtec" / name), 256, 224
    model = args.model or str(shared / "models" / "resnet50v2_layer2_fp32.onnx")
    ex = ac.Extractor(model, output=args.output, resize=resize, crop=crop, cache_dir=args.cache_dir)
    return es, ex.extract(list(es.paths)), ex.extract(list(es.normal_paths))


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def exact_scores(args: argparse.Namespace, name: str, bags: np.ndarray,
                 normals: np.ndarray) -> Tuple[np.ndarray, float, str]:
    """Exact Eq. 6 scores and their wall seconds: from ``--work`` when an earlier run left them, else computed."""
    memo = Path(args.work) / f"{name}-exact-{bags.shape[0]}x{normals.shape[0]}.npz" if args.work else None
    if memo is not None and memo.is_file():
        with np.load(memo) as z:
            return z["scores"], float(z["seconds"]), f"earlier run ({memo.name})"
    scores, sec = timed(ac.normal_scores, bags, normals)
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        np.savez(memo, scores=scores, seconds=sec)
    return scores, sec, "this run"


def accuracy(es: ac.EvalSet, bags: np.ndarray, scores: np.ndarray, repeats: int,
             rank: int) -> Dict[str, float]:
    """NMI and ARI (Ward, true K, semi WA embeddings) and the good/defect AUROC of the image score.

    The embeddings go through the nuisance projection of ``rank`` directions fitted
    on ``bags`` (``--project-out``; the estimator's default), as the product clusters them.

    NMI at one tau on ~100 images moves by +-0.05, so NMI and ARI are means over
    the default tau and its neighbours (x 0.75, x 1.25) and ``repeats`` seeded 80 %
    subsamples of the images (the same subsamples for every bank); ``nmi1`` and
    ``ari1`` are the single full-set values at the default tau.
    """
    labels = np.array(es.labels)
    tau = ac.embed_bags(bags[:1], weights="semi", scores=scores[:1]).tau  # a number, or "<c>x" (relative)
    rng = np.random.default_rng(1)
    subs = [np.sort(rng.choice(labels.size, int(0.8 * labels.size), replace=False)) for _ in range(repeats)]
    proj = ac.nuisance_projection(bags, rank)
    out: Dict[str, List[float]] = {"nmi": [], "ari": []}
    for t in (ac.scaled_tau(tau, 0.75), tau, ac.scaled_tau(tau, 1.25)):
        emb = proj.apply(ac.embed_bags(bags, weights="semi", tau=t, scores=scores).embeddings)
        for sub in subs:
            pred = ac.cluster(emb[sub], es.k, method="ward")
            out["nmi"].append(ac.nmi(labels[sub], pred))
            out["ari"].append(ac.ari(labels[sub], pred))
    emb = proj.apply(ac.embed_bags(bags, weights="semi", scores=scores).embeddings)
    pred = ac.cluster(emb, es.k, method="ward")
    img = ac.image_scores(scores, topk=ac.DEFAULT_IMAGE_TOPK)
    good = np.isin(labels, GOOD_CLASSES)
    return {"nmi": float(np.mean(out["nmi"])), "ari": float(np.mean(out["ari"])), "auroc": auroc(img[~good], img[good]),
            "nmi1": ac.nmi(labels, pred), "ari1": ac.ari(labels, pred)}


def parse_size(text: str):
    """``0.05`` (a fraction of the bank's patches) or ``20000`` (a number of patches)."""
    value = float(text)
    return int(value) if value >= 1 else value


def timing_only(args: argparse.Namespace, name: str) -> None:
    """Only the same-run speed ratio: exact and coreset scoring of ``--time-images`` images, plus the selection."""
    es, bags, normals = load_set(args, name)
    sub = np.sort(np.random.default_rng(args.seed).choice(len(bags), size=min(args.time_images, len(bags)),
                                                          replace=False))
    _, t_exact = timed(ac.normal_scores, bags[sub], normals)
    n_all = len(ac.mtd(ac.shared_root(args.shared) / "data" / "mtd").paths) if name == "mtd" else len(bags)
    print(f"{name}: exact scoring of {sub.size} images against {normals.shape[0]} normal images: {t_exact:.1f} s")
    for size in args.sizes:
        bank, t_sel = timed(ac.compact_bank, normals, size, seed=args.seed)
        _, t_sub = timed(ac.normal_scores, bags[sub], bank)
        per_image = (t_exact / sub.size, t_sub / sub.size)
        print(f"  bank {size}: {bank.shape[0] * bank.shape[1]} patches, selection {t_sel:.1f} s, scoring {t_sub:.1f} s; "
              f"x run {t_exact / (t_sub + t_sel * sub.size / n_all):.1f} (selection shared by {n_all} images); "
              f"for all {n_all} images: exact {per_image[0] * n_all:.0f} s, coreset {t_sel + per_image[1] * n_all:.0f} s, "
              f"x {per_image[0] * n_all / (t_sel + per_image[1] * n_all):.1f}", flush=True)


def bench_set(args: argparse.Namespace, name: str) -> List[Dict[str, object]]:
    """Every size's row for one evaluation set (the exact row first)."""
    es, bags, normals = load_set(args, name)
    n = bags.shape[0]
    sub = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.time_images, n), replace=False))
    exact, t_exact, source = exact_scores(args, name, bags, normals)
    _, t_exact_sub = timed(ac.normal_scores, bags[sub], normals)
    rank = ac.projection_rank(args.project_out, bags.shape[2])
    base = accuracy(es, bags, exact, args.repeats, rank)
    rows: List[Dict[str, object]] = [{"set": name, "size": "exact", "patches": normals.shape[0] * normals.shape[1],
                                      "t_exact": t_exact, "source": source, **base}]
    for size in args.sizes:
        bank, t_sel = timed(ac.compact_bank, normals, size, seed=args.seed)
        scores, t_score = timed(ac.normal_scores, bags, bank)
        _, t_sub = timed(ac.normal_scores, bags[sub], bank)
        acc = accuracy(es, bags, scores, args.repeats, rank)
        rows.append({
            "set": name, "size": size, "patches": int(np.unique(bank.reshape(-1, bank.shape[2]), axis=0).shape[0]),
            "t_select": t_sel, "t_score": t_score, "x_full": t_exact / (t_sel + t_score),
            "x_run": t_exact_sub / (t_sub + t_sel * sub.size / n),
            **{k: acc[k] for k in acc}, **{f"d_{k}": acc[k] - base[k] for k in acc},
        })
    return rows


def print_rows(rows: Sequence[Dict[str, object]]) -> None:
    print("| set | bank | patches | select s | score s | x full | x run | NMI | dNMI | ARI | dARI | AUROC | dAUROC "
          "| dNMI 1 run | dARI 1 run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["size"] == "exact":
            print(f"| {r['set']} | exact | {r['patches']} | - | {r['t_exact']:.1f} ({r['source']}) | 1 | 1 "
                  f"| {r['nmi']:.3f} | | {r['ari']:.3f} | | {r['auroc']:.3f} | | ({r['nmi1']:.3f}) | ({r['ari1']:.3f}) |")
            continue
        print(f"| {r['set']} | {r['size']} | {r['patches']} | {r['t_select']:.1f} | {r['t_score']:.1f} "
              f"| {r['x_full']:.1f} | {r['x_run']:.1f} | {r['nmi']:.3f} | {r['d_nmi']:+.3f} | {r['ari']:.3f} "
              f"| {r['d_ari']:+.3f} | {r['auroc']:.3f} | {r['d_auroc']:+.3f} | {r['d_nmi1']:+.3f} | {r['d_ari1']:+.3f} |",
              flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    p.add_argument("--model", help="ONNX model (default the shared ResNet-50 v2 layer-2 reference build)")
    p.add_argument("--output", default="layer2")
    p.add_argument("--cache-dir", required=True, help="feature cache folder")
    p.add_argument("--work", help="folder keeping the exact scores and their time between runs")
    p.add_argument("--sets", nargs="+", default=["bottle", "pill", "mtd"])
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[0.01, 0.025, 0.05, 0.1])
    p.add_argument("--mtd-per-class", type=int, default=0,
                   help="cluster at most this many MTD images per class (0: all 582; the bank is always all 762)")
    p.add_argument("--time-images", type=int, default=48, help="images of the same-run timing (x run)")
    p.add_argument("--repeats", type=int, default=10, help="80 %% subsamples the NMI and ARI are averaged over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project-out", type=lambda t: t if t == "auto" else int(t), default="auto",
                   help="nuisance directions removed before clustering ('auto' as the estimator; 0: the paper's method)")
    p.add_argument("--json", help="also write every row here")
    p.add_argument("--timing-only", action="store_true",
                   help="only the same-run speed ratio on --time-images images (no exact scores of every image)")
    args = p.parse_args(argv)
    if args.timing_only:
        for name in args.sets:
            timing_only(args, name)
        return 0
    rows: List[Dict[str, object]] = []
    for name in args.sets:
        got = bench_set(args, name)
        print_rows(got)
        rows += got
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

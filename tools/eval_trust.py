#!/usr/bin/env python
"""How far the trust signals can be trusted, measured on the shared real data.

For each data set (MVTec AD bottle and pill, MTD; the paper's evaluation sets of
:mod:`anomclust_lite.datasets`, MTD optionally subsampled per class) it prints:

- **anomaly score**: AUROC of the image anomaly score (mean of the top
  ``--topk`` patch scores) for good vs defective images, unsupervised
  (against the other images) and semi-supervised (against ``--normal-bank``
  labelled normal images), and for the maximum (``topk=1``) beside it;
- **good group**: precision and recall of "good" among the images whose
  semi-supervised score is at most the threshold calibrated on leave-one-out
  scores of the normal bank at false-reject rate ``--rate``; and, without
  normal images, of a two-component Gaussian mixture split of the log
  unsupervised scores, with the separation (Ashman's D) it reached;
- **confidence**: Ward with the true K on the weighted-average embeddings;
  accuracy (after Hungarian matching) of the most confident half of the
  images vs the least confident half, for the centre margin; the mean
  confidence and NMI of the run (and of the automatic-K run), the figures
  behind the weak-clustering warning;
- **new types** (leave-one-type-out): for every defect type t, the images of
  the other classes are split in halves per class (seeded); the first half is
  fitted (Ward, K = number of classes), the second half and all images of t
  are assigned. AUROC of ``novelty`` (t vs the held-out seen images), and
  recall (on t) and false-flag rate (on the held-out seen images) of
  ``new_type`` at the per-cluster threshold at ``--rate``; the distance to
  the nearest centre (the previous rule) beside it. Good images taken by the
  good group (semi-supervised) are never new types. A second table gives
  each unseen type's AUROC and recall, and beside them two things the product
  cannot have: the best recall at 10 % false flags (the threshold chosen with
  the held-out images' labels: the ceiling of any calibration of this score),
  and the AUROC of the distance to the nearest class mean in a linear
  discriminant of the fitted embeddings trained on their *true* types.

The dominant cost, every patch's nearest-patch distance to every other image,
is computed once per data set by :func:`anomclust_lite.nearest_patch_similarities`
and kept in ``--work`` (with the bags), so later runs reuse it.

Usage::

    python tools/eval_trust.py --model ../shared/models/resnet50v2_layer2_fp32.onnx --output layer2 \\
        --cache-dir /tmp/ac_features --work /tmp/ac_trust [--datasets bottle pill mtd] [--mtd-per-class 25]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.linalg import eigh
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

import anomclust_lite as ac
from anomclust_lite.core.defaults import DEFAULT_BANK_SIZE

GOOD_CLASSES = ("good", "Free")
CEILING_RATE = 0.10  # the largest acceptable false-flag rate
#: The columns of a novelty row (:func:`measure_novelty`), and those of the per-type table, in print order.
NOVELTY_KEYS = ("auroc", "recall", "false_flags", "good_flagged", "centre_auroc", "centre_recall",
                "centre_false_flags", "labelled_auroc", "best_recall")
PER_TYPE_KEYS = ("auroc", "recall", "best_recall", "labelled_auroc")


def _shared(arg: Optional[str]) -> Path:
    """``--shared``, else ``$ANOMCLUST_SHARED``, else ``../shared`` beside the repository."""
    if arg:
        return Path(arg)
    env = os.environ.get("ANOMCLUST_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


# ---------------------------------------------------------------- data


def evaluation_set(shared: Path, name: str, per_class: int,
                   rng: np.random.Generator) -> Tuple[ac.EvalSet, int, Optional[int], np.ndarray]:
    """The set, its extractor resize/crop, and the image indices used (MTD: ``per_class`` per class)."""
    if name == "mtd":
        es, resize, crop = ac.mtd(shared / "data" / "mtd"), 224, None
    else:
        es, resize, crop = ac.mvtec_category(shared / "data" / "mvtec" / name), 256, 224
    idx = np.arange(es.n_images)
    if name == "mtd" and per_class:
        lab = np.array(es.labels)
        idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(lab == c))[:per_class] for c in es.classes]))
    return es, resize, crop, idx


def load_or_compute(args: argparse.Namespace, name: str) -> Dict[str, object]:
    """Bags of the images + normal bank, and their (T, M, T) patch-distance tensor, cached in ``--work``."""
    rng = np.random.default_rng(args.seed)
    es, resize, crop, idx = evaluation_set(_shared(args.shared), name, args.mtd_per_class, rng)
    nidx = np.sort(rng.choice(len(es.normal_paths), size=min(args.normal_bank, len(es.normal_paths)), replace=False))
    paths = [es.paths[i] for i in idx] + [es.normal_paths[i] for i in nidx]
    key = hashlib.sha256(json.dumps([Path(args.model).name, args.output, resize, crop, [str(p) for p in paths]]).encode()).hexdigest()[:16]
    work = Path(args.work)
    files = {part: work / f"{name}-{key}-{part}.npy" for part in ("bags", "sims")}
    if not all(f.is_file() for f in files.values()):
        ex = ac.Extractor(args.model, output=args.output, resize=resize, crop=crop, cache_dir=args.cache_dir)
        bags = ex.extract(paths)
        sims = ac.nearest_patch_similarities(bags, memory_mb=args.memory_mb).sims
        work.mkdir(parents=True, exist_ok=True)
        np.save(files["bags"], bags.astype(np.float16))
        np.save(files["sims"], sims)
    print(f"{name}: {files['sims']}", file=sys.stderr)
    sims = np.load(files["sims"])
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0, dtype=np.float32))
    return {"bags": np.load(files["bags"], mmap_mode="r"), "dist": dist, "n": idx.size,
            "labels": np.array([es.labels[i] for i in idx])}


def reduce_over(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, how: str) -> np.ndarray:
    """Patch scores of ``rows`` against ``cols`` (an image is never compared with itself): mean or min."""
    sub = dist[rows][:, :, cols]
    a, b = np.nonzero(rows[:, None] == cols[None, :])
    if how == "mean":
        sub[a, :, b] = 0.0
        count = cols.size - np.bincount(a, minlength=rows.size)
        return sub.sum(axis=2, dtype=np.float64) / count[:, None]
    sub[a, :, b] = np.inf
    return sub.min(axis=2).astype(np.float64)


def embed(bags: np.ndarray, rows: np.ndarray, scores: np.ndarray, tau: "float | str") -> Tuple[np.ndarray, np.ndarray]:
    """WA embeddings of ``rows`` and their softmax weights."""
    w = ac.soft_weights(scores.astype(np.float32), tau)
    return ac.weighted_average(np.asarray(bags[rows], dtype=np.float32), w), w


def ward(bags: np.ndarray, rows: np.ndarray, scores: np.ndarray, tau: "float | str", proj: "ac.Projection",
         k: int, args: argparse.Namespace) -> np.ndarray:
    """Ward at ``k`` on the projected WA embeddings of ``rows``, cut as the estimator cuts it (``--consensus``)."""
    taus = ac.consensus_temperatures(tau) if args.consensus == "auto" else [tau]
    xs = [proj.apply(embed(bags, rows, scores, t)[0]) for t in taus]
    if len(xs) == 1:
        return ac.cluster(xs[0], k, method="ward")
    return ac.cut_linkage(ac.consensus_ward(xs, k)[0], k)


def projection(bags: np.ndarray, rows: np.ndarray, args: argparse.Namespace) -> "ac.Projection":
    """The nuisance projection the estimator would fit on the images ``rows`` (``--project-out``)."""
    sub = np.asarray(bags[rows], dtype=np.float32)
    project_out = args.project_out if args.project_out == "auto" else int(args.project_out)
    return ac.nuisance_projection(sub, ac.projection_rank(project_out, sub.shape[2]))


def centres(emb: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.stack([emb[labels == c].mean(axis=0) for c in range(k)])


def matched_correct(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Whether each image's cluster is matched (Hungarian, one-to-one) to its class."""
    classes, yi = np.unique(y, return_inverse=True)
    k = int(pred.max()) + 1
    table = np.zeros((classes.size, k))
    np.add.at(table, (yi, pred), 1)
    r, c = linear_sum_assignment(-table)
    to_class = np.full(k, -1)
    to_class[c] = r
    return to_class[pred] == yi


# ---------------------------------------------------------------- measurements


def two_component_split(scores: np.ndarray, iterations: int = 200) -> Tuple[np.ndarray, float]:
    """Low component of a 1-D two-Gaussian mixture on log scores (EM from the quartiles), and Ashman's D."""
    x = np.log(scores)
    mu = np.quantile(x, [0.25, 0.75])
    sd = np.full(2, x.std() / 2 + 1e-9)
    pi = np.array([0.5, 0.5])
    for _ in range(iterations):
        logp = -0.5 * ((x[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(pi)
        post = np.exp(logp - logp.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        nk = post.sum(axis=0)
        pi, mu = nk / x.size, (post * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt((post * (x[:, None] - mu) ** 2).sum(axis=0) / nk) + 1e-9
    low = int(np.argmin(mu))
    return post[:, low] > 0.5, float(np.sqrt(2) * abs(mu[1] - mu[0]) / np.sqrt((sd**2).sum()))


def precision_recall(pred: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
    hit = float((pred & truth).sum())
    return hit / max(int(pred.sum()), 1), hit / max(int(truth.sum()), 1)


def measure_scores(data: Dict[str, object], args: argparse.Namespace) -> Dict[str, object]:
    """Anomaly-score AUROC and the good group (semi-supervised threshold; unsupervised mixture split)."""
    dist, n = data["dist"], data["n"]
    good = np.isin(data["labels"], GOOD_CLASSES)
    test, bank = np.arange(n), np.arange(n, dist.shape[0])
    patch = {"unsup": reduce_over(dist, test, test, "mean"), "semi": reduce_over(dist, test, bank, "min")}
    out: Dict[str, object] = {"patch": patch, "good": good}
    for mode, ps in patch.items():
        for k in (args.topk, 1):
            s = ac.image_scores(ps, topk=k)
            out[f"auroc_{mode}_top{k}"] = auroc(s[~good], s[good])
    loo = ac.image_scores(reduce_over(dist, bank, bank, "min"), topk=args.topk)
    out["good_threshold"] = ac.calibrated_threshold(loo, args.rate)
    out["is_good_semi"] = ac.image_scores(patch["semi"], topk=args.topk) <= out["good_threshold"]
    out["good_semi"] = precision_recall(out["is_good_semi"], good)
    split, d = two_component_split(ac.image_scores(patch["unsup"], topk=args.topk))
    out["good_unsup"], out["ashman_d"] = precision_recall(split, good), d
    return out


def measure_confidence(data: Dict[str, object], patch: np.ndarray, mode: str,
                       args: argparse.Namespace) -> Dict[str, float]:
    """Ward at the true K: accuracy of the most vs least confident half; mean confidence; auto-K run."""
    y, n = data["labels"], data["n"]
    emb, _ = embed(data["bags"], np.arange(n), patch, tau_of(mode, args))
    proj = projection(data["bags"], np.arange(n), args)
    emb = proj.apply(emb)
    k = np.unique(y).size
    pred = ward(data["bags"], np.arange(n), patch, tau_of(mode, args), proj, k, args)
    conf = ac.centre_margins(emb, centres(emb, pred, k), pred)
    ok = matched_correct(y, pred)
    order = np.argsort(-conf, kind="stable")
    half = n // 2
    z = ac.linkage_matrix(emb, method="ward")
    d = np.sqrt(np.maximum(((emb[:, None] - emb[None]) ** 2).sum(axis=2), 0.0))
    auto_k = ac.choose_k(d, linkage=z).k
    auto = ward(data["bags"], np.arange(n), patch, tau_of(mode, args), proj, auto_k, args)
    auto_conf = ac.centre_margins(emb, centres(emb, auto, auto_k), auto)
    return {"top": float(ok[order[:half]].mean()), "bottom": float(ok[order[half:]].mean()),
            "mean": float(conf.mean()), "nmi": ac.nmi(y, pred), "auto_k": auto_k,
            "auto_mean": float(auto_conf.mean()), "auto_nmi": ac.nmi(y, auto),
            "auto_largest": float(np.bincount(auto).max() / n)}


def tau_of(mode: str, args: argparse.Namespace) -> "float | str":
    """``--tau``, or (``auto``) the package default of the mode: 0.02 unsupervised, ``"0.4x"`` semi-supervised."""
    tau = None if args.tau == "auto" else args.tau if args.tau.endswith("x") else float(args.tau)
    return ac.effective_tau("semi" if mode == "semi" else "unsupervised", tau)


def halves(y: np.ndarray, unseen: str, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Per seen class, a random first half (fitted) and second half (held out)."""
    fit, held = [], []
    for c in sorted(set(y) - {unseen}):
        idx = rng.permutation(np.flatnonzero(y == c))
        fit += list(idx[: (idx.size + 1) // 2])
        held += list(idx[(idx.size + 1) // 2:])
    return np.sort(fit), np.sort(held)


def novelty_patch_parts(data: Dict[str, object], fit: np.ndarray, pos: np.ndarray, query: np.ndarray, mode: str,
                        args: argparse.Namespace) -> Tuple[np.ndarray, np.ndarray]:
    """Novelty's patch part of the fitted images (leave one out) and of the queries, against the reference
    images ``fit[pos]``, as the estimator takes it: semi-supervised, against the coreset of ``--bank-size``
    of their patches (float16, as a model stores it); otherwise (or when it keeps every patch) their bags."""
    ref, bags = fit[pos], data["bags"]
    rb = np.asarray(bags[ref], dtype=np.float32)
    r, m, d = rb.shape
    size = ac.coreset_size(args.bank_size, r * m)
    if mode != "semi" or size >= r * m:
        return (ac.image_scores(reduce_over(data["dist"], fit, ref, "min"), topk=args.topk),
                ac.image_scores(reduce_over(data["dist"], query, ref, "min"), topk=args.topk))
    rows, sources = ac.source_rows(rb, ac.coreset_indices(rb.reshape(r * m, d), size, seed=args.seed))
    rows = rows.astype(np.float16).astype(np.float32)
    groups = np.full(fit.size, -1, dtype=np.int64)
    groups[pos] = np.arange(pos.size)
    kw = {"memory_mb": args.memory_mb}
    loo = ac.normal_scores(np.asarray(bags[fit], np.float32), rows, groups=(groups, sources), **kw)
    return (ac.image_scores(loo, topk=args.topk),
            ac.image_scores(ac.normal_scores(np.asarray(bags[query], np.float32), rows, **kw), topk=args.topk))


def novelty_run(data: Dict[str, object], fit: np.ndarray, query: np.ndarray, mode: str,
                args: argparse.Namespace) -> Dict[str, np.ndarray]:
    """Fit on ``fit``, assign ``query``: novelty, the centre distance, and both per-cluster flags."""
    dist, bags = data["dist"], data["bags"]
    bank = np.arange(data["n"], dist.shape[0])
    cols = fit if mode == "unsup" else bank
    how = "mean" if mode == "unsup" else "min"
    proj = projection(bags, fit, args)
    s_fit = reduce_over(dist, fit, cols, how)
    e_fit = proj.apply(embed(bags, fit, s_fit, tau_of(mode, args))[0])
    e_q = proj.apply(embed(bags, query, reduce_over(dist, query, cols, how), tau_of(mode, args))[0])
    k = np.unique(data["labels"][fit]).size
    lab = ward(bags, fit, s_fit, tau_of(mode, args), proj, k, args)
    cen = centres(e_fit, lab, k)
    d_q = np.sqrt(((e_q[:, None] - cen[None]) ** 2).sum(axis=2))
    lab_q = d_q.argmin(axis=1)
    pos = ac.seeded_images(fit.size, args.reference_size, args.seed)  # the estimator's novelty reference
    patch_fit, patch_q = novelty_patch_parts(data, fit, pos, query, mode, args)
    parts_fit = (ac.nearest_distances(e_fit, e_fit, leave_one_out=True), patch_fit)
    parts_q = (ac.nearest_distances(e_q, e_fit), patch_q)
    scales = (float(np.median(parts_fit[0])), float(np.median(parts_fit[1])))
    nov_fit, nov_q = ac.novelty_scores(*parts_fit, *scales), ac.novelty_scores(*parts_q, *scales)
    gate = np.zeros(query.size, bool)
    if mode == "semi":
        gate = ac.image_scores(reduce_over(dist, query, bank, "min"), topk=args.topk) <= data["good_threshold"]
    centre_fit = np.sqrt(((e_fit - cen[lab]) ** 2).sum(axis=1))
    return {
        "novelty": nov_q,
        "labelled": labelled_novelty(e_fit, data["labels"][fit], e_q),
        "centre": d_q.min(axis=1),
        "new_type": ac.flag_new_types(nov_q, lab_q, ac.cluster_thresholds(
            nov_fit, ac.calibration_labels(e_fit, lab, cen), k, args.rate), gate),
        "centre_flag": ac.flag_new_types(d_q.min(axis=1), lab_q, ac.cluster_thresholds(centre_fit, lab, k, args.rate), gate),
    }


def best_recall(pos: np.ndarray, neg: np.ndarray, rate: float) -> float:
    """Recall of the best threshold any calibration could choose: the one that flags ``rate`` of ``neg``
    (the held-out images of seen types) at most, chosen with their labels; a ceiling, not a result."""
    allowed = int(np.floor(rate * neg.size))  # held-out images that may lie above the threshold
    return float((pos > np.sort(neg)[::-1][allowed]).mean())


def labelled_novelty(e_fit: np.ndarray, y_fit: np.ndarray, e_q: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    """A reference the product cannot have: distance to the nearest class mean in the discriminant space
    (LDA, within-class scatter shrunk towards the identity) of the fitted images' *true* types."""
    x, q = np.asarray(e_fit, np.float64), np.asarray(e_q, np.float64)
    classes, y = np.unique(y_fit, return_inverse=True)
    means = np.stack([x[y == c].mean(axis=0) for c in range(classes.size)])
    within = np.cov((x - means[y]).T, bias=True)
    within = (1 - shrinkage) * within + shrinkage * np.trace(within) / within.shape[0] * np.eye(within.shape[0])
    between = np.cov(means.T, bias=True)
    axes = eigh(between, within)[1][:, ::-1][:, : classes.size - 1]
    gap = (q @ axes)[:, None, :] - (means @ axes)[None]
    return np.sqrt((gap**2).sum(axis=2)).min(axis=1)


def measure_novelty(data: Dict[str, object], mode: str, args: argparse.Namespace) -> Dict[str, object]:
    """Leave-one-type-out over every defect type, averaged over types (and ``--seeds``); ``per_type``
    holds each unseen type's :data:`PER_TYPE_KEYS`."""
    y = data["labels"]
    good = np.isin(y, GOOD_CLASSES)
    rows, per_type = [], {}
    for seed in range(args.seeds):
        for unseen in sorted(set(y[~good])):
            fit, held = halves(y, unseen, np.random.default_rng(seed))
            new = np.flatnonzero(y == unseen)
            res = novelty_run(data, fit, np.concatenate([held, new]), mode, args)
            is_new = np.r_[np.zeros(held.size, bool), np.ones(new.size, bool)]
            good_q = np.r_[good[held], np.zeros(new.size, bool)]
            rows.append([auroc(res["novelty"][is_new], res["novelty"][~is_new]),
                         res["new_type"][is_new].mean(), res["new_type"][~is_new].mean(),
                         res["new_type"][good_q].mean() if good_q.any() else np.nan,
                         auroc(res["centre"][is_new], res["centre"][~is_new]),
                         res["centre_flag"][is_new].mean(), res["centre_flag"][~is_new].mean(),
                         auroc(res["labelled"][is_new], res["labelled"][~is_new]),
                         best_recall(res["novelty"][is_new], res["novelty"][~is_new], CEILING_RATE)])
            per_type.setdefault(unseen, []).append([rows[-1][NOVELTY_KEYS.index(k)] for k in PER_TYPE_KEYS])
    m = np.nanmean(np.array(rows, dtype=float), axis=0)
    out: Dict[str, object] = dict(zip(NOVELTY_KEYS, map(float, m)))
    out["per_type"] = {t: tuple(np.mean(v, axis=0)) for t, v in per_type.items()}
    return out


# ---------------------------------------------------------------- report


def report(name: str, data: Dict[str, object], args: argparse.Namespace) -> List[str]:
    """Print the main table's rows of one data set; return its per-type novelty rows (and their mean row)."""
    sc = measure_scores(data, args)
    data["good_threshold"] = sc["good_threshold"]
    per_type, means = [], []
    for mode in ("unsup", "semi"):
        conf = measure_confidence(data, sc["patch"][mode], mode, args)
        nov = measure_novelty(data, mode, args)
        good = sc["good_semi"] if mode == "semi" else sc["good_unsup"]
        print(
            f"| {name} | {mode} | {sc[f'auroc_{mode}_top{args.topk}']:.3f} ({sc[f'auroc_{mode}_top1']:.3f}) "
            f"| {good[0]:.2f} / {good[1]:.2f} | {conf['top']:.2f} / {conf['bottom']:.2f} "
            f"| {conf['mean']:.2f} ({conf['nmi']:.2f}) | {conf['auto_k']}: {conf['auto_mean']:.2f} ({conf['auto_nmi']:.2f}, "
            f"{conf['auto_largest']:.0%}) | {nov['auroc']:.3f} ({nov['centre_auroc']:.3f}) "
            f"| {nov['recall']:.2f} / {nov['false_flags']:.3f} ({nov['centre_recall']:.2f} / {nov['centre_false_flags']:.3f}) "
            f"| {nov['good_flagged']:.3f} |",
            flush=True,
        )
        per_type += [f"| {name} | {mode} | {t} | {a:.3f} | {r:.2f} | {best:.2f} | {ref:.3f} |"
                     for t, (a, r, best, ref) in nov["per_type"].items()]
        means.append([nov[k] for k in PER_TYPE_KEYS])
    print(f"| {name} | unsup split | Ashman's D = {sc['ashman_d']:.2f} |", flush=True)
    a, r, best, ref = np.mean(means, axis=0)
    return per_type + [f"| {name} | mean | | {a:.3f} | {r:.2f} | {best:.2f} | {ref:.3f} |"]


HEADER = (
    "| set | weights | anomaly AUROC top-k (max) | good group prec / rec | confidence: acc. top / bottom half "
    "| mean conf. (NMI) | auto K: mean conf. (NMI, largest) | novelty AUROC (centre dist.) "
    "| new_type recall / false flags (centre dist.) | good flagged |\n|---|---|---|---|---|---|---|---|---|---|"
)


PER_TYPE_HEADER = ("| set | weights | unseen type | novelty AUROC | new_type recall | best recall at 10 % false flags "
                   "| labelled reference AUROC |\n|---|---|---|---|---|---|---|")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    parser.add_argument("--model", required=True, help="ONNX feature extractor")
    parser.add_argument("--output", help="model output to use")
    parser.add_argument("--cache-dir", help="feature cache folder")
    parser.add_argument("--work", required=True, help="folder keeping bags and patch-distance tensors between runs")
    parser.add_argument("--datasets", nargs="+", default=["bottle", "pill", "mtd"], choices=["bottle", "pill", "mtd"])
    parser.add_argument("--mtd-per-class", type=int, default=25, help="MTD images per class (0: all; default 25)")
    parser.add_argument("--normal-bank", type=int, default=64, help="labelled normal images used (default 64)")
    parser.add_argument("--reference-size", type=int, default=64, help="fitted images in the novelty patch bank")
    parser.add_argument("--bank-size", type=float, default=DEFAULT_BANK_SIZE,
                        help="semi-supervised novelty reference: that fraction of the reference images' patches "
                             "(a coreset, as the estimator keeps it; default %(default)s; 1: whole images)")
    parser.add_argument("--topk", type=int, default=ac.DEFAULT_IMAGE_TOPK, help="patches averaged into an image score")
    parser.add_argument("--rate", type=float, default=ac.DEFAULT_RATE, help="calibrated false-reject / false-flag rate")
    parser.add_argument("--tau", default="auto",
                        help="softmax temperature of the patch weights: a number, Cx (C x each image's score std), "
                             "or auto (default): the package's default of each mode (0.02 / 0.4x)")
    parser.add_argument("--seeds", type=int, default=1, help="leave-one-type-out splits per type")
    parser.add_argument("--project-out", default="auto",
                        help="nuisance directions removed from the embeddings (auto: the package default; 0: none)")
    parser.add_argument("--consensus", choices=("auto", "off"), default="auto",
                        help="cluster as the estimator does: consensus Ward (auto, its default) or one Ward tree")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-mb", type=float, default=512.0)
    args = parser.parse_args(argv)
    if not _shared(args.shared).is_dir():
        print(f"shared data not found under {_shared(args.shared)} (use --shared or ANOMCLUST_SHARED)", file=sys.stderr)
        return 1
    print(HEADER, flush=True)
    per_type = []
    for name in args.datasets:
        per_type += report(name, load_or_compute(args, name), args)
    print("\nNovelty per unseen type (recall at --rate; best recall: the threshold chosen with the held-out images' "
          "labels, a ceiling; reference: LDA on the fitted images' true types)\n")
    print(PER_TYPE_HEADER)
    print("\n".join(per_type), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

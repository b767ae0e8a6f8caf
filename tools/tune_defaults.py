#!/usr/bin/env python
"""Choose the package defaults (tau, score aggregate, tau rule) once, on bottle + pill + MTD together.

Two stages, public API only:

``scores``  extracts the bags of one backbone (through the feature cache) and
            computes every patch score the sweep needs, once per data set: one
            unsupervised pass (:func:`anomclust_lite.nearest_patch_similarities`)
            gives every aggregate, one semi-supervised pass
            (:func:`anomclust_lite.tiered_normal_scores`) the labelled-normal
            scores. Bags and scores are saved as ``.npy`` under
            ``--work/<backbone>/`` (outside the repository).
``tables``  sweeps tau (absolute, or times the std / MAD of the set's patch
            scores, or times each image's score std) and the aggregate over the
            saved scores with the paper's protocol (K known, Ward, NMI / ARI /
            F1) and prints Markdown tables: the best tau of each setting, the
            neighbourhood of the package defaults, and every category at the
            defaults against the paper's WRN-50 numbers. Results are memoised
            in ``--work/sweep_memo.json``.

``--mtd-fraction`` and ``--normal-cap`` shrink MTD and the labelled normal sets
to fit a compute budget (BENCHMARKS.md says what the recorded run used).

Usage::

    python tools/tune_defaults.py scores --backbone r50v2 \\
        --model ../shared/models/resnet50v2_layer2_fp32.onnx --output layer2 \\
        --cache-dir /work/feats/r50v2_layer2 --work /work/feats/tuning --normal-cap 100 --mtd-fraction 0.35
    python tools/tune_defaults.py tables --work /work/feats/tuning --backbones r50v2 r18int8 --subsamples 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import anomclust_lite as ac

REPO_ROOT = Path(__file__).resolve().parent.parent

SETS = ("bottle", "pill", "mtd")
#: q of the topk_mean aggregate measured (fraction of the other images).
TOPK_QS = (0.1, 0.2, 0.3, 0.5)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def eval_set(shared: Path, name: str) -> ac.EvalSet:
    """The paper's protocol for one of the shared sets."""
    if name == "mtd":
        return ac.mtd(shared / "data" / "mtd")
    return ac.mvtec_category(shared / "data" / "mvtec" / name)


def stratified(es: ac.EvalSet, fraction: float, seed: int) -> ac.EvalSet:
    """A seeded subset of ``fraction`` of each class (to fit the compute budget; same K)."""
    if fraction >= 1:
        return es
    rng = np.random.default_rng(seed)
    labels = np.array(es.labels)
    keep: List[int] = []
    for c in es.classes:
        idx = np.flatnonzero(labels == c)
        keep += sorted(rng.choice(idx, size=max(2, round(fraction * idx.size)), replace=False).tolist())
    keep.sort()
    pick = lambda seq: tuple(seq[i] for i in keep)  # noqa: E731
    return ac.EvalSet(es.name, pick(es.paths), pick(es.labels), es.normal_paths, pick(es.mask_paths))


def frame(name: str, resize: int) -> "tuple[int, Optional[int]]":
    """Resize and crop: MVTec resize + centre crop 224/256 of it, MTD the whole frame."""
    if name == "mtd":
        return resize * 224 // 256, None
    return resize, resize * 224 // 256


def extract(args: argparse.Namespace, paths: Sequence[Path], name: str) -> np.ndarray:
    resize, crop = frame(name, args.resize)
    ex = ac.Extractor(
        args.model, output=args.output, resize=resize, crop=crop, cache_dir=args.cache_dir
    )
    res = ex.extract_all(paths, on_error="raise")
    return res.bags


def normal_subset(n_normal: int, cap: Optional[int], seed: int) -> np.ndarray:
    """Indices of the labelled normal images used: all, or a seeded subset of ``cap``."""
    if cap is None or n_normal <= cap:
        return np.arange(n_normal)
    tiers = ac.nested_subsets(n_normal, [cap / n_normal], seed=seed)
    return np.flatnonzero(tiers == 0)


def unsupervised_scores(bags: np.ndarray, memory_mb: float) -> Dict[str, np.ndarray]:
    """Every aggregate of Eq. 5 from one pass over the image pairs."""
    matches = ac.nearest_patch_similarities(bags, memory_mb=memory_mb)
    out = {agg: ac.scores_from_matches(matches, aggregate=agg) for agg in ("mean", "max", "min")}
    for q in TOPK_QS:
        out[f"topk_mean{q}"] = ac.scores_from_matches(matches, aggregate="topk_mean", q=q)
    return out


def compute_set(args: argparse.Namespace, name: str, out_dir: Path) -> None:
    es = eval_set(Path(args.shared), name)
    if name == "mtd":
        es = stratified(es, args.mtd_fraction, args.seed)
    t0 = time.time()
    bags = extract(args, es.paths, name)
    np.save(out_dir / f"{name}_bags.npy", bags)
    np.save(out_dir / f"{name}_labels.npy", np.array(es.labels))
    _log(f"{name}: {bags.shape} bags in {time.time() - t0:.0f}s")
    if not args.semi_only and not (out_dir / f"{name}_unsup_mean.npy").exists():
        t0 = time.time()
        for key, s in unsupervised_scores(bags, args.memory_mb).items():
            np.save(out_dir / f"{name}_unsup_{key}.npy", s)
        _log(f"{name}: unsupervised pass {time.time() - t0:.0f}s")
    if not (out_dir / f"{name}_semi.npy").exists():
        t0 = time.time()
        keep = normal_subset(len(es.normal_paths), args.normal_cap, args.seed)
        normal = extract(args, [es.normal_paths[i] for i in keep], name)
        if args.bank_size is not None:  # the product's compact bank (a coreset of the normal patches)
            normal = ac.compact_bank(normal, args.bank_size, seed=args.seed)
        tiers = np.zeros(len(normal), dtype=np.int64)
        semi = ac.tiered_normal_scores(bags, normal, tiers, n_tiers=1, memory_mb=args.memory_mb)[0]
        np.save(out_dir / f"{name}_semi.npy", semi)
        np.save(out_dir / f"{name}_semi_normals.npy", np.array([len(keep), len(es.normal_paths)]))
        _log(f"{name}: semi-supervised pass over {len(keep)}/{len(es.normal_paths)} normals {time.time() - t0:.0f}s")


def cmd_scores(args: argparse.Namespace) -> int:
    out_dir = Path(args.work) / args.backbone
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        compute_set(args, name, out_dir)
    return 0


# --------------------------------------------------------------------------- sweep

#: The paper's WRN-50 NMI (unsupervised, semi-supervised), Table 1.
PAPER_NMI = {"bottle": (0.495, 0.607), "pill": (0.469, 0.515), "mtd": (0.179, 0.390)}
#: tau rules: the temperature is the value itself, or the value times a spread of the set's scores.
RULES = ("abs", "std", "mad", "imgstd")
GRIDS = {
    "abs": (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2),
    "std": (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5),
    "mad": (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5),
    "imgstd": (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5),
}
METRICS = ("nmi", "ari", "acc", "f1")


@dataclass
class SetData:
    """One backbone's saved bags and scores of one evaluation set."""

    name: str
    bags: np.ndarray
    labels: np.ndarray
    scores: Dict[str, np.ndarray]  # "semi" and "unsup_<aggregate>"
    normals: str
    subsamples: List[np.ndarray]
    projection: "Optional[ac.Projection]" = None  # removed from the WA embeddings (``--project-out``)

    @property
    def tag(self) -> str:
        """What identifies this set's results in the memo: its size, subsamples and projection rank."""
        rank = self.projection.rank if self.projection is not None else 0
        return f"{len(self.labels)}|{len(self.subsamples)}" + (f"|p{rank}" if rank else "")


def subsamples(n: int, count: int, seed: int) -> List[np.ndarray]:
    """``count`` seeded, sorted subsets of 80 % of ``range(n)``."""
    rng = np.random.default_rng([seed, 80])
    return [np.sort(rng.permutation(n)[: int(0.8 * n)]) for _ in range(count)]


def load_set(folder: Path, name: str, n_sub: int) -> SetData:
    scores = {}
    if (folder / f"{name}_semi.npy").exists():
        scores["semi"] = np.load(folder / f"{name}_semi.npy")
    for f in sorted(folder.glob(f"{name}_unsup_*.npy")):
        scores[f.stem[len(name) + 1 :]] = np.load(f)
    used, total = np.load(folder / f"{name}_semi_normals.npy") if "semi" in scores else (0, 0)
    labels = np.load(folder / f"{name}_labels.npy")
    bags = np.load(folder / f"{name}_bags.npy")
    return SetData(name, bags, labels, scores, f"{used}/{total}", subsamples(len(labels), n_sub, 0))


def spread(scores: np.ndarray, rule: str) -> "float | np.ndarray":
    """The scale a relative tau multiplies: 1, the std or the normal-consistent MAD of all patch scores,
    or (``imgstd``) each image's own std, shape (N, 1)."""
    if rule == "abs":
        return 1.0
    if rule == "imgstd":
        return np.maximum(np.std(scores, axis=1, dtype=np.float64, keepdims=True), 1e-12)
    if rule == "std":
        return float(np.std(scores, dtype=np.float64))
    med = np.median(scores)
    return float(1.4826 * np.median(np.abs(scores - med)))


def weighted_average(bags: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`anomclust_lite.weighted_average` without its per-call validation of the bags (10x faster here)."""
    return np.matmul(weights[:, None, :], bags)[:, 0]


def evaluate(sd: SetData, key: str, rule: str, value: float) -> Dict[str, float]:
    """Ward with K known on the weighted averages: metrics on all images, and NMI averaged over subsamples.

    The temperature is ``value * spread``; softmax(s / (value * spread)) = soft_weights(s / spread, value),
    which also covers a per-image spread."""
    s = sd.scores[key] / spread(sd.scores[key], rule)
    x = weighted_average(sd.bags, ac.soft_weights(s.astype(np.float32), value))
    if sd.projection is not None:
        x = sd.projection.apply(x.astype(np.float64))
    k = len(np.unique(sd.labels))
    pred = ac.cluster(x, k, method="ward")
    out = {
        "nmi": ac.nmi(sd.labels, pred),
        "ari": ac.ari(sd.labels, pred),
        "acc": ac.accuracy(sd.labels, pred),
        "f1": ac.f1_macro(sd.labels, pred),
    }
    subs = []
    for idx in sd.subsamples:
        lab = sd.labels[idx]
        subs.append(ac.nmi(lab, ac.cluster(x[idx], len(np.unique(lab)), method="ward")))
    out["sub"] = float(np.mean(subs)) if subs else out["nmi"]
    return out


def sweep(
    data: Dict[str, Dict[str, SetData]], keys: Optional[Sequence[str]], memo_path: Path
) -> Dict[tuple, Dict[str, float]]:
    """Every (backbone, score key, rule, value, set); ``memo`` holds results of earlier runs on the same scores."""
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    res: Dict[tuple, Dict[str, float]] = {}
    for bb, sets in data.items():
        saved = sorted(set.intersection(*(set(sd.scores) for sd in sets.values())))
        for key in [k for k in saved if keys is None or k in keys]:
            for rule in RULES:
                for v in GRIDS[rule]:
                    for name, sd in sets.items():
                        tag = f"{bb}|{key}|{rule}|{v}|{name}|{sd.tag}"
                        if tag not in memo:
                            memo[tag] = evaluate(sd, key, rule, v)
                        res[(bb, key, rule, v, name)] = memo[tag]
            memo_path.write_text(json.dumps(memo))
            _log(f"{bb} {key} done")
    return res


def mode_of(key: str) -> str:
    return "semi" if key == "semi" else "unsup"


def summarise(res: Dict[tuple, Dict[str, float]]) -> Dict[tuple, Dict[str, float]]:
    """Per (backbone, key, rule, value): mean NMI over the sets, its grid-neighbour average, worst-set regret."""
    best: Dict[tuple, float] = {}  # best subsample NMI of each (backbone, mode, set) over every setting
    for (bb, key, _, _, name), r in res.items():
        k = (bb, mode_of(key), name)
        best[k] = max(best.get(k, -1.0), r["sub"])
    rows: Dict[tuple, Dict[str, float]] = {}
    for (bb, key, rule, v, name), r in res.items():
        row = rows.setdefault((bb, key, rule, v), {"regret": 0.0})
        row[name] = r["nmi"]
        row[name + "_sub"] = r["sub"]
        row["regret"] = max(row["regret"], best[(bb, mode_of(key), name)] - r["sub"])
    for (bb, key, rule, v), row in rows.items():
        row["mean"] = float(np.mean([row[n] for n in SETS if n in row]))
        row["sub"] = float(np.mean([row[n + "_sub"] for n in SETS if n in row]))
    for (bb, key, rule, v), row in rows.items():
        grid = GRIDS[rule]
        i = grid.index(v)
        near = [rows[(bb, key, rule, u)]["sub"] for u in grid[max(0, i - 1) : i + 2]]
        row["smooth"] = float(np.mean(near))
    return rows


def _f(v: float) -> str:
    return f"{v:.3f}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])


def _tau_label(rule: str, v: float) -> str:
    return f"{v:g}" if rule == "abs" else f"{v:g} x {rule}"


def cross_backbone(rows: Dict[tuple, Dict[str, float]], backbones: Sequence[str]) -> Dict[tuple, float]:
    """Smoothed mean NMI averaged over the backbones, per (key, rule, value)."""
    out: Dict[tuple, float] = {}
    for (bb, key, rule, v) in rows:
        if all((b, key, rule, v) in rows for b in backbones):
            out[(key, rule, v)] = float(np.mean([rows[(b, key, rule, v)]["smooth"] for b in backbones]))
    return out


def summary_table(rows: Dict[tuple, Dict[str, float]], backbones: Sequence[str], mode: str) -> str:
    """Best value of each (score key, tau rule), picked on the backbones' mean smoothed NMI."""
    cross = cross_backbone(rows, backbones)
    body = []
    for key in sorted({k for (k, _, _) in cross if mode_of(k) == mode}):
        for rule in RULES:
            v = max(GRIDS[rule], key=lambda u: cross[(key, rule, u)])
            cells = [key, _tau_label(rule, v), _f(cross[(key, rule, v)])]
            for bb in backbones:
                r = rows[(bb, key, rule, v)]
                cells += [_f(r["mean"]), _f(r["sub"]), _f(r["smooth"]), _f(r["regret"])]
            body.append(cells)
    header = ["scores", "best tau", "smoothed, both"]
    for bb in backbones:
        header += [f"{bb} mean", f"{bb} sub", f"{bb} smoothed", f"{bb} worst regret"]
    return _table(header, body)


def pick(rows: Dict[tuple, Dict[str, float]], backbones: Sequence[str], mode: str) -> str:
    """The setting with the best smoothed NMI averaged over the backbones, and its worst-set regret."""
    cross = {k: v for k, v in cross_backbone(rows, backbones).items() if mode_of(k[0]) == mode}
    key, rule, v = max(cross, key=cross.get)
    regret = max(rows[(bb, key, rule, v)]["regret"] for bb in backbones)
    return f"{key}, tau {_tau_label(rule, v)}: smoothed NMI {cross[(key, rule, v)]:.3f}, worst-set regret {regret:.3f}"


def grid_table(rows: Dict[tuple, Dict[str, float]], bb: str, key: str, rule: str) -> str:
    """NMI against tau for one backbone, score key and rule (all images; sub = 80 % subsample mean)."""
    names = [n for n in SETS if n in rows[(bb, key, rule, GRIDS[rule][0])]]
    body = []
    for v in GRIDS[rule]:
        r = rows[(bb, key, rule, v)]
        body.append([_tau_label(rule, v)] + [_f(r[n]) for n in names] + [_f(r[k]) for k in ("mean", "sub", "smooth", "regret")])
    return _table(["tau"] + names + ["mean", "mean (sub)", "smoothed", "worst regret"], body)


def paper_table(res: Dict[tuple, Dict[str, float]], choice: Dict[str, tuple], backbones: Sequence[str]) -> str:
    """Every category at the chosen defaults beside the paper's WRN-50 NMI."""
    names = [n for n in SETS if any(k[4] == n for k in res)]
    body = []
    for mode, col in (("unsup", 0), ("semi", 1)):
        if mode not in choice:
            continue
        key, rule, v = choice[mode]
        for bb in backbones:
            cells = [f"{mode} {bb}"]
            means = {m: [] for m in METRICS}
            for name in names:
                r = res[(bb, key, rule, v, name)]
                cells.append(" / ".join(_f(r[m]) for m in METRICS))
                for m in METRICS:
                    means[m].append(r[m])
            cells.append(" / ".join(_f(float(np.mean(means[m]))) for m in METRICS))
            body.append(cells)
        paper = [PAPER_NMI[n][col] for n in names]
        body.append([f"{mode} paper WRN-50 (NMI)"] + [_f(p) for p in paper] + [_f(float(np.mean(paper)))])
    return _table(["setting"] + [f"{n} NMI / ARI / F1 micro / F1 macro" for n in names] + ["mean"], body)


def default_choice() -> Dict[str, tuple]:
    """The package defaults as sweep coordinates (score key, rule, value)."""
    from anomclust_lite.core import defaults as d

    agg = d.DEFAULT_AGGREGATE
    key = f"unsup_topk_mean{d.DEFAULT_TOPK_FRACTION}" if agg == "topk_mean" else f"unsup_{agg}"
    return {"unsup": (key, *_rule_value(d.DEFAULT_TAU_UNSUPERVISED)), "semi": ("semi", *_rule_value(d.DEFAULT_TAU_SEMI))}


def _rule_value(tau: "float | str") -> Tuple[str, float]:
    """A package tau as sweep coordinates: ``("abs", tau)``, or ``("imgstd", c)`` for a relative ``"<c>x"``."""
    return ("imgstd", float(tau[:-1])) if isinstance(tau, str) else ("abs", float(tau))


def cmd_tables(args: argparse.Namespace) -> int:
    t0 = time.time()
    data = {bb: {n: load_set(Path(args.work) / bb, n, args.subsamples) for n in args.sets} for bb in args.backbones}
    for sets in data.values():
        for sd in sets.values():
            rank = ac.projection_rank(args.project_out if args.project_out == "auto" else int(args.project_out),
                                      sd.bags.shape[2])
            sd.projection = ac.nuisance_projection(sd.bags, rank) if rank else None
    for bb, sets in data.items():
        print(f"{bb}: labelled normals used " + ", ".join(f"{n} {sd.normals}" for n, sd in sets.items())
              + "; nuisance directions removed " + ", ".join(
                  f"{n} {sd.projection.rank if sd.projection is not None else 0}" for n, sd in sets.items()))
    res = sweep(data, args.keys, Path(args.work) / "sweep_memo.json")
    rows = summarise(res)
    modes = [m for m in ("unsup", "semi") if any(mode_of(k[1]) == m for k in rows)]
    for mode in modes:
        print(f"\n### Best tau per score aggregate and tau rule, {mode}\n")
        print(summary_table(rows, args.backbones, mode))
    if args.detail:
        for (bb, key, rule) in sorted({(b, k, r) for (b, k, r, _) in rows}):
            print(f"\n#### {bb}, {key}, tau rule {rule}\n")
            print(grid_table(rows, bb, key, rule))
    choice = {m: c for m, c in default_choice().items() if m in modes}
    for mode in modes:
        print(f"\n### Pick, {mode}: " + pick(rows, args.backbones, mode))
        key, rule, _ = choice[mode]
        for bb in args.backbones:
            print(f"\n#### Neighbourhood of the default, {bb}, {key}, tau rule {rule}\n")
            print(grid_table(rows, bb, key, rule))
    print("\n### Every category at the package defaults " + str(choice) + "\n")
    print(paper_table(res, choice, args.backbones))
    _log(f"tables in {time.time() - t0:.0f}s")
    return 0


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scores", help="extract bags and compute the patch scores of one backbone")
    s.add_argument("--backbone", required=True, help="name of the backbone's folder under --work")
    s.add_argument("--model", required=True, help="ONNX feature model")
    s.add_argument("--output", default=None, help="model output (stride-8 feature map)")
    s.add_argument("--shared", default=os.environ.get("ANOMCLUST_SHARED", str(REPO_ROOT.parent / "shared")))
    s.add_argument("--cache-dir", default=None, help="feature cache")
    s.add_argument("--work", required=True, help="folder for bags and scores (outside the repository)")
    s.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    s.add_argument("--resize", type=int, default=256, help="MVTec resize (crop 7/8 of it); MTD gets 7/8 whole")
    s.add_argument("--mtd-fraction", type=float, default=1.0, help="cluster a stratified subset of MTD")
    s.add_argument("--normal-cap", type=int, default=None, help="use at most this many labelled normals")
    s.add_argument("--bank-size", type=float, default=None,
                   help="score the semi-supervised set against this coreset fraction of the normal patches, "
                        "as the estimator does (default: every patch, exact)")
    s.add_argument("--semi-only", action="store_true", help="skip the unsupervised pass")
    s.add_argument("--memory-mb", type=float, default=1024.0)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_scores)
    t = sub.add_parser("tables", help="sweep the saved scores and print the tables")
    t.add_argument("--work", required=True)
    t.add_argument("--backbones", nargs="+", required=True)
    t.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    t.add_argument("--subsamples", type=int, default=20, help="seeded 80 %% subsamples per set (noise)")
    t.add_argument("--keys", nargs="+", default=None, help="score keys to sweep (default: all saved)")
    t.add_argument("--detail", action="store_true", help="also print the full tau grid of every setting")
    t.add_argument("--project-out", default="auto",
                   help="nuisance directions removed from the embeddings (auto: the package default; 0: the paper)")
    t.set_defaults(func=cmd_tables)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

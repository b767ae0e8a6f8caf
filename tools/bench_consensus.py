#!/usr/bin/env python
"""Consensus Ward against one Ward tree, on the patch scores ``tools/tune_defaults.py scores`` saved.

For every backbone, data set and mode (``semi``: the labelled-normal scores;
``unsup``: the unsupervised mean aggregate), the WA embeddings are made at the
package's default temperature and its neighbours (x0.75, x1.25; "smoothed"), the
nuisance projection removed as the estimator does, and the images clustered
with K known (the paper's protocol) two ways:

- ``single``: one Ward tree at tau, cut at K (``consensus="off"``, the paper);
- ``consensus``: :func:`anomclust_lite.consensus_ward` of the embeddings at
  ``tau x CONSENSUS_TAU_FACTORS`` (``consensus="auto"``, the default).

It prints NMI / ARI on all images and NMI averaged over seeded 80 % subsamples
(``--subsamples``), and the *stability* of each: the spread (max - min) of NMI
over ``--noise-draws`` runs whose patch scores were multiplied by ``1 + 0.01 z``
(z standard normal), a perturbation far below what a rerun of the extractor on
another machine changes.

Usage::

    python tools/bench_consensus.py --work /work/feats/tuning_full --backbones r50v2 r18int8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import anomclust_lite as ac
import tune_defaults as td
from anomclust_lite.core.defaults import DEFAULT_TAU_SEMI, DEFAULT_TAU_UNSUPERVISED

SETS = ("bottle", "pill", "mtd")
MODES = {"semi": ("semi", DEFAULT_TAU_SEMI), "unsup": ("unsup_mean", DEFAULT_TAU_UNSUPERVISED)}
#: The neighbouring temperatures of the "smoothed" figures.
NEIGHBOURS = (0.75, 1.0, 1.25)


def embeddings(bags: np.ndarray, scores: np.ndarray, tau: "float | str", proj: "ac.Projection") -> List[np.ndarray]:
    """Projected WA embeddings at :func:`anomclust_lite.consensus_temperatures` (the one at ``tau`` first)."""
    return [proj.apply(ac.weighted_average(bags, ac.soft_weights(scores, t))) for t in ac.consensus_temperatures(tau)]


def labels_of(xs: List[np.ndarray], k: int, how: str) -> np.ndarray:
    if how == "single":
        return ac.cluster(xs[0], k, method="ward")
    return ac.cut_linkage(ac.consensus_ward(xs, k)[0], k)


def measure(bags: np.ndarray, scores: np.ndarray, y: np.ndarray, tau: "float | str",
            args: argparse.Namespace) -> Dict[str, Dict[str, float]]:
    """Both ways: NMI / ARI on all images, subsample NMI (smoothed over the neighbours), NMI spread under noise."""
    proj = ac.nuisance_projection(bags, ac.projection_rank("auto", bags.shape[2]))  # as the estimator does
    subs = td.subsamples(y.size, args.subsamples, 0)
    out: Dict[str, Dict[str, float]] = {"single": {}, "consensus": {}}
    for f in NEIGHBOURS:
        xs = embeddings(bags, scores, ac.scaled_tau(tau, f), proj)
        for how, row in out.items():
            t0 = time.perf_counter()
            pred = labels_of(xs, len(np.unique(y)), how)
            seconds = time.perf_counter() - t0
            sub = float(np.mean([ac.nmi(y[i], labels_of([x[i] for x in xs], len(np.unique(y[i])), how)) for i in subs]))
            row[f"sub{f}"] = sub
            if f == 1.0:
                row.update(seconds=seconds, nmi=ac.nmi(y, pred), ari=ac.ari(y, pred), sub=sub)
    rng = np.random.default_rng(1)
    noisy = [scores * (1.0 + 0.01 * rng.standard_normal(scores.shape)).astype(np.float32) for _ in range(args.noise_draws)]
    for how, row in out.items():
        runs = [ac.nmi(y, labels_of(embeddings(bags, s, tau, proj), len(np.unique(y)), how)) for s in noisy]
        row["spread"] = float(np.ptp(runs)) if runs else float("nan")
        row["smoothed"] = float(np.mean([row[f"sub{f}"] for f in NEIGHBOURS]))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="tune_defaults.py's --work folder (bags and scores per backbone)")
    p.add_argument("--backbones", nargs="+", required=True)
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["semi", "unsup"])
    p.add_argument("--subsamples", type=int, default=10)
    p.add_argument("--noise-draws", type=int, default=5)
    args = p.parse_args(argv)
    print("| backbone | mode | set | single NMI / ARI | consensus NMI / ARI | single sub / smoothed | "
          "consensus sub / smoothed | NMI spread under 1 % noise: single / consensus | consensus s |")
    print("|---|---|---|---|---|---|---|---|---|")
    means: Dict[tuple, List[float]] = {}
    for bb in args.backbones:
        folder = Path(args.work) / bb
        for mode in args.modes:
            key, tau = MODES[mode]
            for name in args.sets:
                bags = np.load(folder / f"{name}_bags.npy", mmap_mode="r")
                r = measure(bags, np.load(folder / f"{name}_{key}.npy").astype(np.float32),
                            np.load(folder / f"{name}_labels.npy"), tau, args)
                s, c = r["single"], r["consensus"]
                print(f"| {bb} | {mode} | {name} | {s['nmi']:.3f} / {s['ari']:.3f} | {c['nmi']:.3f} / {c['ari']:.3f} | "
                      f"{s['sub']:.3f} / {s['smoothed']:.3f} | {c['sub']:.3f} / {c['smoothed']:.3f} | "
                      f"{s['spread']:.3f} / {c['spread']:.3f} | {c['seconds']:.2f} |", flush=True)
                for how, row in r.items():
                    means.setdefault((bb, mode, how), []).append(row["sub"])
                    means.setdefault((bb, mode, how + " smoothed"), []).append(row["smoothed"])
    for (bb, mode, how), v in sorted(means.items()):
        print(f"mean over sets: {bb} {mode} {how}: {np.mean(v):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

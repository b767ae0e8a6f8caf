#!/usr/bin/env python
"""Choose ``project_out`` once: the nuisance projection's rank over bottle + pill + MTD, both backbones.

Reads the bags and patch scores ``tools/tune_defaults.py scores`` saved under
``--work/<backbone>/`` and, for every rank ``r`` in ``--ranks`` (0 = the
paper's method), removes the top ``r`` principal directions of the clustered
images' patches (:func:`anomclust_lite.nuisance_projection`) from the WA
embeddings, clusters with Ward (K known) and prints NMI: per set, the mean
over the tau values around the package default (``--taus``; one tau moves a
set's NMI by +-0.05) of one clustering of all images and of 10 seeded 80 %
subsamples, then the mean over the sets. The projection is fitted once per set
(it does not depend on tau or the weights).

Usage::

    python tools/bench_projection.py --work /work/feats/tuning --backbones r50v2 r18int8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

import anomclust_lite as ac
import tune_defaults as td
from anomclust_lite.core.defaults import DEFAULT_TAU_SEMI, DEFAULT_TAU_UNSUPERVISED

RANKS = (0, 2, 4, 8, 16, 32)
#: Score key -> tau values around the package default (0.02 unsupervised, 0.04 semi-supervised).
TAUS = {"unsup_mean": (0.015, 0.02, 0.03, 0.04), "semi": (0.02, 0.03, 0.04, 0.05)}


def nmi_pair(x: np.ndarray, sd: td.SetData) -> Tuple[float, float]:
    """NMI of Ward (K known) on ``x``: all images, and the mean over the set's subsamples."""
    k = len(np.unique(sd.labels))
    full = ac.nmi(sd.labels, ac.cluster(x, k, method="ward"))
    subs = [ac.nmi(sd.labels[i], ac.cluster(x[i], len(np.unique(sd.labels[i])), method="ward"))
            for i in sd.subsamples]
    return full, float(np.mean(subs))


def rank_table(sd: td.SetData, key: str, ranks: Sequence[int], taus: Sequence[float]) -> Dict[int, Tuple[float, float]]:
    """rank -> (mean NMI of all images, mean subsample NMI) over ``taus``."""
    embeddings = [td.weighted_average(sd.bags, ac.soft_weights(sd.scores[key].astype(np.float32), t)) for t in taus]
    out = {}
    for r in ranks:
        proj = ac.nuisance_projection(sd.bags, r)
        pairs = np.array([nmi_pair(proj.apply(e.astype(np.float64)), sd) for e in embeddings])
        out[r] = (float(pairs[:, 0].mean()), float(pairs[:, 1].mean()))
    return out


def print_tables(results: Dict[Tuple[str, str], Dict[str, Dict[int, Tuple[float, float]]]], ranks: Sequence[int]) -> None:
    sets = sorted({s for per in results.values() for s in per})
    print("| backbone | scores | r | " + " | ".join(f"{s} all / sub" for s in sets) + " | mean all | mean sub | gain sub |")
    print("|---" * (len(sets) + 6) + "|")
    for (bb, key), per in results.items():
        base = np.mean([per[s][0][1] for s in sets])
        for r in ranks:
            cells = [f"{per[s][r][0]:.3f} / {per[s][r][1]:.3f}" for s in sets]
            mean_all = np.mean([per[s][r][0] for s in sets])
            mean_sub = np.mean([per[s][r][1] for s in sets])
            print(f"| {bb} | {key} | {r} | " + " | ".join(cells)
                  + f" | {mean_all:.3f} | {mean_sub:.3f} | {mean_sub - base:+.3f} |")


def at_defaults(sd: td.SetData, key: str, rank: int) -> Tuple[float, float]:
    """NMI and ARI of one clustering of all images at the package's default tau for ``key``."""
    tau = DEFAULT_TAU_SEMI if key == "semi" else DEFAULT_TAU_UNSUPERVISED
    x = td.weighted_average(sd.bags, ac.soft_weights(sd.scores[key].astype(np.float32), tau)).astype(np.float64)
    pred = ac.cluster(ac.nuisance_projection(sd.bags, rank).apply(x), len(np.unique(sd.labels)), method="ward")
    return ac.nmi(sd.labels, pred), ac.ari(sd.labels, pred)


def print_defaults(rows: Dict[Tuple[str, str, int], Dict[str, Tuple[float, float]]]) -> None:
    """Every set at the default tau, without and with the projection, against the paper's WRN-50 NMI."""
    sets = list(td.SETS)
    print("\n| backbone | mode | r | " + " | ".join(f"{s} NMI / ARI" for s in sets) + " | mean NMI / ARI |")
    print("|---" * (len(sets) + 4) + "|")
    for (bb, key, r), per in rows.items():
        vals = np.array([per[s] for s in sets if s in per])
        cells = [f"{per[s][0]:.3f} / {per[s][1]:.3f}" if s in per else "-" for s in sets]
        print(f"| {bb} | {key} | {r} | " + " | ".join(cells) + f" | {vals[:, 0].mean():.3f} / {vals[:, 1].mean():.3f} |")
    for i, mode in enumerate(("unsup_mean", "semi")):
        paper = [td.PAPER_NMI[s][i] for s in sets]
        print(f"| paper WRN-50 | {mode} | - | " + " | ".join(f"{v:.3f}" for v in paper) + f" | {np.mean(paper):.3f} |")


def main(argv: "List[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="the --work folder of tune_defaults.py scores")
    p.add_argument("--backbones", nargs="+", required=True)
    p.add_argument("--sets", nargs="+", choices=td.SETS, default=list(td.SETS))
    p.add_argument("--keys", nargs="+", choices=sorted(TAUS), default=sorted(TAUS))
    p.add_argument("--ranks", nargs="+", type=int, default=list(RANKS))
    p.add_argument("--subsamples", type=int, default=10)
    args = p.parse_args(argv)
    t0 = time.time()
    results: Dict[Tuple[str, str], Dict[str, Dict[int, Tuple[float, float]]]] = {}
    defaults: Dict[Tuple[str, str, int], Dict[str, Tuple[float, float]]] = {}
    for bb in args.backbones:
        for name in args.sets:
            sd = td.load_set(Path(args.work) / bb, name, args.subsamples)
            rank = ac.projection_rank("auto", sd.bags.shape[2])
            for key in args.keys:
                results.setdefault((bb, key), {})[name] = rank_table(sd, key, args.ranks, TAUS[key])
                for r in sorted({0, rank}):
                    defaults.setdefault((bb, key, r), {})[name] = at_defaults(sd, key, r)
            td._log(f"{bb} {name} done")
    print_tables(results, args.ranks)
    print_defaults(defaults)
    td._log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

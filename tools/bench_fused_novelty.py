#!/usr/bin/env python
"""The unsupervised fit's novelty calibration taken from the scoring kernel vs computed on its own.

An unsupervised fit compares image pairs twice: for the patch scores (Eq. 5, every
pair; Eq. 7 from 500 images, every image against 64 seeded reference images) and
for the novelty calibration (every image against the 64 images of the novelty
reference, each patch's nearest-patch distance). The second set of pairs lies
within the first, so ``anomclust_lite.patch_scores_and_nearest`` keeps those
distances while it scores. This tool times, alternating, ``--repeats`` times:

- *separate*: ``patch_scores`` then ``patch_scores(aggregate="min", reference=ref)``
  (what a fit ran before);
- *fused*: ``patch_scores_and_nearest`` (what a fit runs now),

and prints the medians, their ratio and the largest difference of the results
(both scores, and the nearest-patch distances). Real bags: the paper's
evaluation set ``--set`` through the embedded default backbone (``--cache-dir``
keeps its features); ``--synthetic N`` uses N random bags of ``--patches`` x
``--dim`` instead (from 500 images the fit scores by Eq. 7: ``--eq7``).

Usage::

    python tools/bench_fused_novelty.py --set pill --cache-dir /tmp/ac_features
    python tools/bench_fused_novelty.py --synthetic 600 --patches 196 --eq7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

import anomclust_lite as ac


def real_bags(name: str, shared: Optional[str], cache_dir: Optional[str]) -> np.ndarray:
    """Bags of an evaluation set by the embedded default backbone (MVTec: 256 / 224; MTD: 224)."""
    root = ac.shared_root(shared)
    if name == "mtd":
        es, resize, crop = ac.mtd(root / "data" / "mtd"), 224, None
    else:
        es, resize, crop = ac.mvtec_category(root / "data" / "mvtec" / name), 256, 224
    return ac.Extractor(None, resize=resize, crop=crop, cache_dir=cache_dir).extract(list(es.paths))


def synthetic_bags(n: int, m: int, d: int, seed: int) -> np.ndarray:
    return ac.normalize_patches(np.random.default_rng(seed).normal(size=(n, m, d)).astype(np.float32))


def timed(fn: Callable[[], Tuple[np.ndarray, np.ndarray]]) -> Tuple[float, Tuple[np.ndarray, np.ndarray]]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(bags: np.ndarray, ref: np.ndarray, eq7: bool, repeats: int, memory_mb: float) -> dict:
    """Median seconds of both ways, alternating, and the largest differences of their results."""
    score_ref = ref if eq7 else None
    kw = {"memory_mb": memory_mb}

    def separate() -> Tuple[np.ndarray, np.ndarray]:
        return (ac.patch_scores(bags, reference=score_ref, **kw),
                ac.patch_scores(bags, aggregate="min", reference=ref, **kw))

    def fused() -> Tuple[np.ndarray, np.ndarray]:
        return ac.patch_scores_and_nearest(bags, ref, reference=score_ref, **kw)

    times: dict = {"separate": [], "fused": []}
    outs = {}
    for _ in range(repeats):
        for name, fn in (("separate", separate), ("fused", fused)):
            sec, outs[name] = timed(fn)
            times[name].append(sec)
    (s0, n0), (s1, n1) = outs["separate"], outs["fused"]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"separate_s": med["separate"], "fused_s": med["fused"], "speedup": med["separate"] / med["fused"],
            "scores_max_diff": float(np.abs(s0 - s1).max()), "nearest_max_diff": float(np.abs(n0 - n1).max())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--set", choices=("bottle", "pill", "mtd"), help="real bags of this evaluation set")
    src.add_argument("--synthetic", type=int, metavar="N", help="N random bags instead")
    ap.add_argument("--patches", type=int, default=784, help="synthetic: patches per image (default 784)")
    ap.add_argument("--dim", type=int, default=512, help="synthetic: patch dimension (default 512)")
    ap.add_argument("--eq7", action="store_true", help="score by Eq. 7 against the novelty reference (from 500 images)")
    ap.add_argument("--reference-size", type=int, default=64, help="novelty reference images (default 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-mb", type=float, default=512.0)
    ap.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    ap.add_argument("--cache-dir", help="feature cache folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.set:
        bags = real_bags(args.set, args.shared, args.cache_dir)
    else:
        bags = synthetic_bags(args.synthetic, args.patches, args.dim, args.seed)
    n = bags.shape[0]
    rng = np.random.default_rng(args.seed)
    ref = np.sort(rng.choice(n, size=min(args.reference_size, n), replace=False))
    res = compare(bags, ref, args.eq7, args.repeats, args.memory_mb)
    what = args.set or f"synthetic {bags.shape}"
    print(f"{what}, {n} images, reference {ref.size}, {'Eq. 7' if args.eq7 else 'all pairs'}: "
          f"separate {res['separate_s']:.2f} s, fused {res['fused_s']:.2f} s, speed-up {res['speedup']:.2f}x; "
          f"largest difference: scores {res['scores_max_diff']:.2e}, nearest {res['nearest_max_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

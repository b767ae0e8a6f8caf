#!/usr/bin/env python
"""Unsupervised at scale: Eq. 7 reference size on the shared data, and many synthetic images end to end.

``references``: for each evaluation set (MVTec AD bottle and pill, MTD;
unsupervised, the paper's protocol), one kernel pass gives every patch's
best match in every other image; from it, the exact scores (Eq. 5) and the
Eq. 7 scores over seeded subsamples of ``R`` reference images, for every ``R``.
Printed: NMI and ARI of Ward with the true K (means over the default tau and
its neighbours x 0.75 / x 1.25, ``--repeats`` 80 % image subsamples and, for
Eq. 7, ``--seeds`` reference draws), each minus the exact value, and the
kernel's cost ratio ``N^2 / 2`` pairs over ``N * R`` (the kernel's time is
linear in its image pairs, tools/bench_kernels.py); the exact pass's seconds.

``synthetic``: a seeded generator writes the largest N bags (``--patches`` x
``--dims``, float16; normal texture plus a few patches of one of ``--types``
defect types) to a ``.npy`` in ``--work``, chunk by chunk; for each ``--sizes`` N
a fresh process fits ``AnomalyClusterer`` on a read-only memory map of the
first N (fit a sample of ``fit_size``, assign the rest in chunks). Printed per
N: seconds per stage, peak resident memory (``ru_maxrss`` of that process), NMI
against the generator's types; then each stage's growth exponent (least squares
of log seconds on log N over the sizes).

Usage::

    python tools/bench_scale.py references --cache-dir /work/feats/r50v2_layer2 [--mtd-per-class 30]
    python tools/bench_scale.py synthetic --work /tmp/bench_scale --sizes 1000 2000 5000 10000
    python tools/bench_scale.py mtd --cache-dir /work/feats/r50v2_layer2

``mtd``: all 1,344 real MTD images (the 582 of the protocol and the 762 normal
ones; 952 Free) fitted unsupervised with K = 6 from the feature cache
(float16 bags): seconds per stage, peak resident memory, NMI against the folders.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import anomclust_lite as ac
from anomclust_lite.core import defaults


# ---------------------------------------------------------------- references (shared data)


def load_set(args: argparse.Namespace, name: str):
    """The evaluation set (MTD capped per class) and its bags, through the feature cache."""
    shared = ac.shared_root(args.shared)
    if name == "mtd":
        es, resize, crop = ac.mtd(shared / "data" / "mtd"), 224, None
        if args.mtd_per_class:
            lab = np.array(es.labels)
            rng = np.random.default_rng(args.seed)
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(lab == c))[:args.mtd_per_class]
                                           for c in es.classes]))
            es = ac.EvalSet(es.name, tuple(es.paths[i] for i in keep), tuple(es.labels[i] for i in keep),
                            es.normal_paths, tuple(es.mask_paths[i] for i in keep))
    else:
        es, resize, crop = ac.mvtec_category(shared / "data" / "mvtec" / name), 256, 224
    model = args.model or str(shared / "models" / "resnet50v2_layer2_fp32.onnx")
    ex = ac.Extractor(model, output=args.output, resize=resize, crop=crop, cache_dir=args.cache_dir)
    return es, ex.extract(list(es.paths))


def scores_over(dist: np.ndarray, ref: Optional[np.ndarray]) -> np.ndarray:
    """Mean patch distance to the reference images (all when None), an image never compared with itself."""
    n = dist.shape[0]
    cols = np.arange(n) if ref is None else ref
    sub = dist[:, :, cols].astype(np.float64)
    rows, pos = np.nonzero(np.arange(n)[:, None] == cols[None, :])
    sub[rows, :, pos] = 0.0
    count = cols.size - np.bincount(rows, minlength=n)
    return (sub.sum(axis=2) / count[:, None]).astype(np.float32)


def nmi_ari(es: ac.EvalSet, bags: np.ndarray, scores: np.ndarray, subs: List[np.ndarray]) -> np.ndarray:
    """Mean (NMI, ARI) over the default tau and its neighbours and the image subsamples ``subs``."""
    labels = np.array(es.labels)
    tau = defaults.DEFAULT_TAU_UNSUPERVISED
    got = []
    for t in (0.75 * tau, tau, 1.25 * tau):
        emb = ac.embed_bags(bags, weights="unsupervised", tau=t, scores=scores).embeddings
        for sub in subs:
            pred = ac.cluster(emb[sub], es.k, method="ward")
            got.append((ac.nmi(labels[sub], pred), ac.ari(labels[sub], pred)))
    return np.mean(got, axis=0)


def references(args: argparse.Namespace) -> int:
    print("| set | N | R | pairs exact / Eq. 7 | NMI | dNMI | ARI | dARI |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        es, bags = load_set(args, name)
        n = bags.shape[0]
        t0 = time.perf_counter()
        sims = ac.nearest_patch_similarities(bags).sims
        t_exact = time.perf_counter() - t0
        dist = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        del sims
        rng = np.random.default_rng(1)
        subs = [np.sort(rng.choice(n, int(0.8 * n), replace=False)) for _ in range(args.repeats)]
        base = nmi_ari(es, bags, scores_over(dist, None), subs)
        print(f"| {name} | {n} | all (exact pass {t_exact:.0f} s) | 1 | {base[0]:.3f} | | {base[1]:.3f} | |", flush=True)
        for r in [r for r in args.refs if r < n]:
            draws = [np.sort(np.random.default_rng(s).choice(n, r, replace=False)) for s in range(args.seeds)]
            got = np.mean([nmi_ari(es, bags, scores_over(dist, ref), subs) for ref in draws], axis=0)
            ratio = (n * (n - 1) / 2) / (n * r - r * (r + 1) / 2)
            print(f"| {name} | {n} | {r} | {ratio:.1f} | {got[0]:.3f} | {got[0] - base[0]:+.3f} | {got[1]:.3f} "
                  f"| {got[1] - base[1]:+.3f} |", flush=True)
    return 0


# ---------------------------------------------------------------- synthetic, end to end


def write_bags(path: Path, n: int, m: int, d: int, types: int, seed: int) -> None:
    """Seeded synthetic bags (float16) written chunk by chunk to the ``.npy`` file ``path`` (no mapping held),
    and their types (-1: normal) beside it."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(-1, types, size=n)
    protos = rng.standard_normal((8, d), dtype=np.float32)
    axes = rng.standard_normal((types, d), dtype=np.float32) * 1.5
    step = max(1, (32 << 20) // (m * d * 4))
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f2", "fortran_order": False, "shape": (n, m, d)})
        for a in range(0, n, step):
            b = min(n, a + step)
            x = protos[rng.integers(0, 8, size=(b - a, m))] + 0.6 * rng.standard_normal((b - a, m, d), dtype=np.float32)
            for i in range(b - a):
                if kinds[a + i] >= 0:
                    x[i, rng.choice(m, max(1, m // 50), replace=False)] += axes[kinds[a + i]]
            ac.normalize_patches(x).astype(np.float16).tofile(fh)
    np.save(path.with_suffix(".types.npy"), kinds)


def first_images(path: Path, n: int) -> np.ndarray:
    """A read-only memory map of the first ``n`` bags of the ``.npy`` file ``path``."""
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n,) + tuple(shape[1:]))


def synthetic_one(args: argparse.Namespace) -> int:
    """One N in this process: fit the first N bags of the file, print the stage seconds, peak memory and NMI."""
    path = Path(args.work) / "bags.npy"
    bags = first_images(path, args.n)
    kinds = np.load(path.with_suffix(".types.npy"))[: args.n]
    chosen = {k: v for k, v in (("fit_size", args.fit_size), ("score_reference", args.score_reference),
                                ("subsample_from", args.subsample_from), ("reference_size", args.reference_size)) if v is not None}
    model = ac.AnomalyClusterer(args.types + 1, bag_dtype="float16", seed=args.seed, **chosen)
    t0 = time.perf_counter()
    model.fit(bags)
    out = {"n": args.n, "fit": time.perf_counter() - t0, **model.timings_,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "nmi": ac.nmi(kinds, model.labels_), "sample": int(model.fit_sample_.size if model.fit_sample_ is not None
                                                             else args.n)}
    print(json.dumps(out))
    return 0


def synthetic(args: argparse.Namespace) -> int:
    path = Path(args.work) / "bags.npy"
    t0 = time.perf_counter()
    write_bags(path, max(args.sizes), args.patches, args.dims, args.types, args.seed)
    print(f"wrote {max(args.sizes)} bags in {time.perf_counter() - t0:.0f} s", flush=True)
    rows: List[Dict[str, float]] = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "synthetic-one", "--n", str(n), "--work", args.work, "--patches",
               str(args.patches), "--dims", str(args.dims), "--types", str(args.types), "--seed", str(args.seed)]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in (("fit_size", args.fit_size), ("score_reference",
                args.score_reference), ("subsample_from", args.subsample_from), ("reference_size",
                args.reference_size)) if v is not None]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    stages = ["scoring", "distances", "choosing_k", "clustering", "novelty", "assigning", "fit"]
    rows = [{s: 0.0 for s in stages} | r for r in rows]  # no "assigning" when every image was fitted
    print("| N | " + " | ".join(f"{s} s" for s in stages) + " | peak MiB | NMI |")
    print("|---" * (len(stages) + 3) + "|")
    for r in rows:
        print(f"| {r['n']} | " + " | ".join(f"{r[s]:.1f}" for s in stages) + f" | {r['peak_mib']:.0f} | {r['nmi']:.3f} |")
    fits = {}
    for s in stages:  # over the sizes where the stage ran
        ran = [r for r in rows if r[s] > 0]
        if len(ran) > 1:
            fits[s] = np.polyfit(np.log([r["n"] for r in ran]), np.log([r[s] for r in ran]), 1)[0]
    print("growth exponent (seconds ~ N^e, over the sizes where the stage ran): "
          + ", ".join(f"{s} {e:.2f}" for s, e in fits.items()))
    path.unlink()
    return 0


def mtd_all(args: argparse.Namespace) -> int:
    """All 1,344 MTD images (the 582 of the protocol plus the 762 normal ones) fitted unsupervised, end to end."""
    shared = ac.shared_root(args.shared)
    es = ac.mtd(shared / "data" / "mtd")
    paths = list(es.paths) + list(es.normal_paths)
    labels = np.array(list(es.labels) + ["Free"] * len(es.normal_paths))
    model_file = args.model or str(shared / "models" / "resnet50v2_layer2_fp32.onnx")
    t0 = time.perf_counter()
    ex = ac.Extractor(model_file, output=args.output, resize=224, crop=None, cache_dir=args.cache_dir)
    bags = ex.extract_all(paths, on_error="raise", bag_dtype="float16").bags
    t_extract = time.perf_counter() - t0
    chosen = {k: v for k, v in (("fit_size", args.fit_size), ("score_reference", args.score_reference),
                                ("subsample_from", args.subsample_from), ("reference_size", args.reference_size)) if v is not None}
    model = ac.AnomalyClusterer(6, bag_dtype="float16", **chosen)
    t0 = time.perf_counter()
    model.fit(bags)
    out = {"n": len(paths), "extract (cached)": t_extract, "fit": time.perf_counter() - t0, **model.timings_,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "nmi": ac.nmi(labels, model.labels_),
           "params": {k: v for k, v in model.get_params().items() if k in ("fit_size", "score_reference",
                                                                            "subsample_from", "reference_size")}}
    print(json.dumps(out))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("references", help="Eq. 7 reference size on the shared data")
    ref.add_argument("--shared")
    ref.add_argument("--model")
    ref.add_argument("--output", default="layer2")
    ref.add_argument("--cache-dir", required=True)
    ref.add_argument("--sets", nargs="+", default=["bottle", "pill", "mtd"])
    ref.add_argument("--refs", nargs="+", type=int, default=[8, 16, 32, 64, 128])
    ref.add_argument("--mtd-per-class", type=int, default=30)
    ref.add_argument("--repeats", type=int, default=10)
    ref.add_argument("--seeds", type=int, default=3)
    ref.add_argument("--seed", type=int, default=0)
    real = sub.add_parser("mtd", help="all 1,344 real MTD images, unsupervised, end to end")
    real.add_argument("--shared")
    real.add_argument("--model")
    real.add_argument("--output", default="layer2")
    real.add_argument("--cache-dir", required=True)
    for opt in ("--fit-size", "--score-reference", "--subsample-from", "--reference-size"):
        real.add_argument(opt, type=int, help="estimator parameter (default: its default)")
    for name, helptext in (("synthetic", "N synthetic images end to end, for every N"),
                           ("synthetic-one", "one N (run by 'synthetic' in a fresh process)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--work", required=True, help="folder for the bags file (deleted at the end)")
        s.add_argument("--patches", type=int, default=784)
        s.add_argument("--dims", type=int, default=512)
        s.add_argument("--types", type=int, default=4)
        s.add_argument("--seed", type=int, default=0)
        for opt in ("--fit-size", "--score-reference", "--subsample-from", "--reference-size"):
            s.add_argument(opt, type=int, help="estimator parameter (default: its default)")
        if name == "synthetic":
            s.add_argument("--sizes", nargs="+", type=int, default=[1000, 2000, 5000, 10000])
        else:
            s.add_argument("--n", type=int, required=True)
    args = p.parse_args(argv)
    Path(getattr(args, "work", ".") or ".").mkdir(parents=True, exist_ok=True)
    commands = {"references": references, "synthetic": synthetic, "synthetic-one": synthetic_one, "mtd": mtd_all}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())

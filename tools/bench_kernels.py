"""Benchmark the blocked patch-distance kernel against this machine's SGEMM peak.

Prints, from one run:
- the float32 GEMM throughput of this machine (best of a few square and
  kernel-shaped products through NumPy's BLAS, with its default threads),
  measured before and again after the kernels: the ratios use the best
  of all, so a slow phase of a shared machine cannot flatter them;
- the kernel's plan (images per task, worker threads, BLAS controlled);
- ``patch_scores`` and ``hausdorff_distances`` throughput in useful GFLOP/s
  (``N(N-1)/2`` pairs x ``2 M^2 D``) and its ratio to the SGEMM peak, and the
  same for ``normal_scores`` of the N images against ``--normals`` others
  (the rectangular path: ``N * R`` pairs);
- the peak extra memory (tracemalloc) of ``patch_scores`` against its budget;
- the speed-up over the per-ordered-pair ``scipy.spatial.distance.cdist`` loop
  that peer implementations use (timed on a sample of pairs, extrapolated).

Usage::

    python tools/bench_kernels.py                 # N=160, M=784, D=512
    python tools/bench_kernels.py --n 40 --quick  # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_info

from anomclust_lite import hausdorff_distances, normal_scores, patch_scores
from anomclust_lite._kernel import plan_tasks


def sgemm_gflops(shapes: "list[tuple[int, int, int]]", seconds: float) -> "dict[str, float]":
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        np.matmul(a, b.T, out=c)  # warm-up
        best = np.inf
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            np.matmul(a, b.T, out=c)
            best = min(best, time.perf_counter() - t0)
        out[f"{m}x{k}x{n}"] = 2.0 * m * k * n / best / 1e9
    return out


def random_bags(n: int, m: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bags = np.empty((n, m, d), dtype=np.float32)
    for i in range(n):
        x = rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        bags[i] = x
    return bags


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=160)
    p.add_argument("--m", type=int, default=784)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--memory-mb", type=float, default=512.0)
    p.add_argument("--normals", type=int, default=40, help="normal images for the normal_scores run (0 skips)")
    p.add_argument("--cdist-pairs", type=int, default=6, help="ordered pairs timed for the cdist baseline")
    p.add_argument("--quick", action="store_true", help="skip the Hausdorff run and shorten SGEMM timing")
    p.add_argument("--sgemm-seconds", type=float, default=None,
                   help="time spent on each SGEMM shape, before and after (default 3, or 1 with --quick)")
    args = p.parse_args(argv)
    n, m, d = args.n, args.m, args.d

    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}")
    bags = random_bags(n, m, d)
    flops = n * (n - 1) / 2 * 2.0 * m * m * d
    print(f"problem: N={n} M={m} D={d}  useful work {flops / 1e12:.2f} TFLOP; memory_mb={args.memory_mb:g}")

    shapes = [(4096, 4096, 4096), (3136, 512, 3136), (2048, 512, 2048)]
    seconds = args.sgemm_seconds if args.sgemm_seconds is not None else (1.0 if args.quick else 3.0)
    gemm = sgemm_gflops(shapes, seconds)
    peak = max(gemm.values())
    for shape, g in gemm.items():
        print(f"sgemm {shape:>16}: {g:8.1f} GFLOP/s")
    print(f"sgemm peak before the kernels (best of the above): {peak:.1f} GFLOP/s")
    b, workers = plan_tasks(m, d, args.memory_mb, n)
    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"kernel plan: tasks of 1 x {b} images, {workers} worker threads; BLAS: {', '.join(blas) or 'none found'}")

    t0 = time.perf_counter()
    scores = patch_scores(bags, memory_mb=args.memory_mb)
    t_scores = time.perf_counter() - t0

    t_h = t_n = None
    if not args.quick:
        t0 = time.perf_counter()
        hausdorff_distances(bags, memory_mb=args.memory_mb)
        t_h = time.perf_counter() - t0
    if args.normals > 0:
        normals = random_bags(args.normals, m, d, seed=1)
        t0 = time.perf_counter()
        normal_scores(bags, normals, memory_mb=args.memory_mb)
        t_n = time.perf_counter() - t0

    # Memory in a separate run: tracemalloc's bookkeeping stays out of the timings.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    patch_scores(bags, memory_mb=args.memory_mb)
    peak_bytes = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    om = n * m * 8 * 2  # float64 accumulator + float32 result, O(N*M)
    print(
        f"patch_scores peak extra memory (tracemalloc, separate run): {peak_bytes / 2**20:.1f} MiB "
        f"= {peak_bytes / (args.memory_mb * 2**20 + om):.3f} of budget {args.memory_mb:g} MiB + O(N*M) {om / 2**20:.1f} MiB"
    )

    after = sgemm_gflops(shapes, seconds)
    print(f"sgemm peak after the kernels: {max(after.values()):.1f} GFLOP/s")
    peak = max(peak, *after.values())
    print(f"sgemm peak used for the ratios (best of before and after): {peak:.1f} GFLOP/s")
    g_scores = flops / t_scores / 1e9
    print(f"patch_scores: {t_scores:.2f} s, {g_scores:.1f} GFLOP/s, ratio to sgemm peak {g_scores / peak:.3f}")
    if t_h is not None:
        g_h = flops / t_h / 1e9
        print(f"hausdorff_distances (max-min): {t_h:.2f} s, {g_h:.1f} GFLOP/s, ratio to sgemm peak {g_h / peak:.3f}")
    if t_n is not None:
        g_n = n * args.normals * 2.0 * m * m * d / t_n / 1e9
        print(f"normal_scores ({n} x {args.normals} normal images): {t_n:.2f} s, {g_n:.1f} GFLOP/s, "
              f"ratio to sgemm peak {g_n / peak:.3f}")

    # The per-ordered-pair cdist loop: min over rows for every (i, j), i != j.
    pairs = [(i, (i + 1) % n) for i in range(min(args.cdist_pairs, n))]
    t0 = time.perf_counter()
    for i, j in pairs:
        cdist(bags[i], bags[j]).min(axis=1)
    t_pair = (time.perf_counter() - t0) / len(pairs)
    t_loop = t_pair * n * (n - 1)
    print(
        f"cdist loop: {t_pair * 1e3:.1f} ms per ordered pair (timed on {len(pairs)} pairs), "
        f"extrapolated {t_loop:.0f} s for all {n * (n - 1)} ordered pairs; speed-up of patch_scores {t_loop / t_scores:.1f}x"
    )
    if not np.isfinite(scores).all():  # pragma: no cover - sanity
        print("non-finite scores", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

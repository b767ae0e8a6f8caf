"""Benchmark the blocked patch-distance kernel against this machine's SGEMM throughput.

Prints, from one run:
- the kernel's plan (images per task, worker threads, BLAS controlled);
- SGEMM *windows* before and after every timed kernel run: back-to-back
  products of a few square and kernel-shaped sizes through NumPy's BLAS with
  its default threads, ``--sgemm-seconds`` (default 5 s) per shape, then the
  kernel's own products alone (one single-threaded SGEMM of the task shape
  per worker, all at once; a diagnostic). Two statistics per shape: the
  *sustained* throughput (all the window's work over all its time -- how the
  kernels are measured, so the ratio compares like with like) and the *best
  single call* (an extreme that catches the machine's fastest moments);
- the *reference shape*: the one with the highest median sustained rate over
  all the run's windows. It is chosen once, on the whole run, so that no
  single window can pick whichever shape happened to catch a fast phase of
  this shared machine, and no short calibration can pick a shape that is
  usually slower;
- ``patch_scores`` (``--rounds`` times), ``hausdorff_distances`` and
  ``normal_scores`` (the N images against ``--normals`` others: the
  rectangular path, ``N * R`` pairs) in useful GFLOP/s (``N(N-1)/2`` pairs x
  ``2 M^2 D``), each against the reference shape's sustained rate in the
  faster of its two neighbouring windows, so that neither a slow phase of
  the machine nor its drift between the start and the end of the run can
  flatter the ratio. The target is the median of the ``patch_scores``
  ratios. Printed beside it, stricter: the ratio to the fastest shape of the
  two windows, and to their best single call;
- the peak extra memory (tracemalloc) of ``patch_scores`` against its budget;
- the speed-up over the per-ordered-pair ``scipy.spatial.distance.cdist`` loop
  that peer implementations use (timed on a sample of pairs, extrapolated).

Usage::

    python tools/bench_kernels.py                 # N=160, M=784, D=512
    python tools/bench_kernels.py --n 40 --quick  # smoke run
    python tools/bench_kernels.py --compare-sgemm 12
        # only: 12 alternations of a 2-thread 3136x512x3136 window and the
        # kernel's products alone (sustained rates, same process)
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import threading
import time
import tracemalloc
from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_info, threadpool_limits

from anomclust_lite import hausdorff_distances, normal_scores, patch_scores, plan_tasks


#: Issue 2's speed target: patch_scores at >= 80 % of the machine's SGEMM throughput.
TARGET = 0.80


def back_to_back(call: "Callable[[], object]", seconds: float) -> "tuple[int, float, float, float]":
    """Run ``call()`` back to back for ``seconds`` (warm it up first): ``(calls, start, stop, best call's seconds)``."""
    calls = 0
    best = np.inf
    start = t1 = time.perf_counter()
    t_end = start + seconds
    while t1 < t_end:
        t0 = t1
        call()
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        calls += 1
    return calls, start, t1, best


def sgemm_gflops(shapes: "list[tuple[int, int, int]]", seconds: float) -> "dict[str, tuple[float, float]]":
    """``{shape: (sustained, best_call)}`` GFLOP/s of back-to-back ``A @ B.T`` calls in a window of ``seconds``."""
    rng = np.random.default_rng(0)
    out = {}
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        np.matmul(a, b.T, out=c)  # warm-up
        calls, start, stop, best = back_to_back(functools.partial(np.matmul, a, b.T, out=c), seconds)
        gflop = 2.0 * m * k * n / 1e9
        out[f"{m}x{k}x{n}"] = (gflop * calls / (stop - start), gflop / best)
    return out


def median_rates(windows: "list[dict[str, tuple[float, float]]]") -> "dict[str, float]":
    """``{shape: median sustained GFLOP/s over all windows}``, in the windows' shape order."""
    return {name: float(np.median([w[name][0] for w in windows])) for name in windows[0]}


def reference_shape(windows: "list[dict[str, tuple[float, float]]]") -> str:
    """The shape with the highest median sustained rate over all ``windows`` (ties: the first listed)."""
    medians = median_rates(windows)
    return max(medians, key=medians.__getitem__)


def task_sgemm_gflops(m: int, cols: int, d: int, workers: int, seconds: float) -> float:
    """Sustained GFLOP/s of the kernel's own products alone: ``workers`` threads, each
    running single-threaded ``(m x d) @ (d x cols)`` SGEMMs back to back for ``seconds``."""
    rng = np.random.default_rng(1)
    ops = [
        (rng.standard_normal((m, d), dtype=np.float32), rng.standard_normal((cols, d), dtype=np.float32),
         np.empty((m, cols), dtype=np.float32))
        for _ in range(workers)
    ]
    calls = [0] * workers
    start = [0.0] * workers
    stop = [0.0] * workers
    go = threading.Barrier(workers)

    def work(w: int) -> None:
        a, b, c = ops[w]
        np.matmul(a, b.T, out=c)  # warm-up
        go.wait()
        calls[w], start[w], stop[w], _ = back_to_back(functools.partial(np.matmul, a, b.T, out=c), seconds)

    with threadpool_limits(limits=1, user_api="blas"):
        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return 2.0 * m * cols * d * sum(calls) / (max(stop) - min(start)) / 1e9


def compare_sgemm(pairs: int, m: int, d: int, memory_mb: float, n: int, seconds: float) -> int:
    """Alternate windows of one big default-threaded SGEMM and of the kernel's products alone."""
    b, workers = plan_tasks(m, d, memory_mb, n)
    big = 4 * m
    ratios = []
    for _ in range(pairs):
        sustained, best = sgemm_gflops([(big, d, big)], seconds)[f"{big}x{d}x{big}"]
        alone = task_sgemm_gflops(m, b * m, d, workers, seconds)
        ratios.append(alone / sustained)
        print(f"sgemm {big}x{d}x{big}: sustained {sustained:6.1f}, best single call {best:6.1f} GFLOP/s | "
              f"kernel's products alone ({workers} x single-threaded {m}x{d}x{b * m}): {alone:6.1f} GFLOP/s | "
              f"ratio {ratios[-1]:.3f}")
    print(f"products alone / sgemm sustained: min {min(ratios):.3f}, median {float(np.median(ratios)):.3f}, "
          f"max {max(ratios):.3f}")
    return 0


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo, or the platform's word for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "processor unknown"


def random_bags(n: int, m: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bags = np.empty((n, m, d), dtype=np.float32)
    for i in range(n):
        x = rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        bags[i] = x
    return bags


def parse_args(argv: "list[str] | None") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=160)
    p.add_argument("--m", type=int, default=784)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--memory-mb", type=float, default=512.0)
    p.add_argument("--normals", type=int, default=40, help="normal images for the normal_scores run (0 skips)")
    p.add_argument("--cdist-pairs", type=int, default=6, help="ordered pairs timed for the cdist baseline")
    p.add_argument("--rounds", type=int, default=3, help="timed patch_scores runs, each between two SGEMM windows")
    p.add_argument("--quick", action="store_true", help="one patch_scores round, no Hausdorff run, shorter SGEMM windows")
    p.add_argument("--sgemm-seconds", type=float, default=None,
                   help="each candidate shape's turn in every SGEMM window (default 5, or 1 with --quick); "
                        "with --compare-sgemm, each window (default 2)")
    p.add_argument("--sgemm-square", type=int, default=4096,
                   help="size of the square candidate SGEMM shape (half of it is used for the second square-ish shape)")
    p.add_argument("--compare-sgemm", type=int, default=0, metavar="PAIRS",
                   help="only alternate PAIRS windows of the default-threaded SGEMM and of the kernel's "
                        "products alone, and print their sustained rates")
    return p.parse_args(argv)


class Windows:
    """The SGEMM windows of one run: every candidate shape's rates, then the kernel's products alone."""

    def __init__(self, shapes: "list[tuple[int, int, int]]", seconds: float, task: "tuple[int, int, int, int]") -> None:
        self.shapes, self.seconds, self.task = shapes, seconds, task  # task: (m, cols, d, workers)
        self.alone_seconds = min(3.0, seconds)
        self.rates: "list[dict[str, tuple[float, float]]]" = []
        self.alone: "list[float]" = []

    def measure(self) -> None:
        """Run one window and print its rates."""
        self.rates.append(sgemm_gflops(self.shapes, self.seconds))
        self.alone.append(task_sgemm_gflops(*self.task, self.alone_seconds))
        rates = ", ".join(f"{shape} {sustained:.1f}" for shape, (sustained, _) in self.rates[-1].items())
        best_call = max(call for _, call in self.rates[-1].values())
        print(f"window {len(self.rates) - 1}: sgemm sustained {rates}; best single call {best_call:.1f}; "
              f"kernel's products alone {self.alone[-1]:.1f} GFLOP/s")


def timed_runs(args: argparse.Namespace, bags: np.ndarray, flops: float) -> "list[tuple[str, Callable[[], object], float]]":
    """``(label, call, useful FLOP)`` of every kernel run to time, in order."""
    n, m, d = bags.shape
    normals = random_bags(args.normals, m, d, seed=1) if args.normals > 0 else None
    runs: "list[tuple[str, Callable[[], object], float]]" = [
        ("patch_scores", lambda: patch_scores(bags, memory_mb=args.memory_mb), flops)
    ] * (1 if args.quick else args.rounds)
    if not args.quick:
        runs.append(("hausdorff_distances (max-min)", lambda: hausdorff_distances(bags, memory_mb=args.memory_mb), flops))
    if normals is not None:
        runs.append((f"normal_scores ({n} x {args.normals} normal images)",
                     lambda: normal_scores(bags, normals, memory_mb=args.memory_mb), n * args.normals * 2.0 * m * m * d))
    return runs


def time_between_windows(runs: "list[tuple[str, Callable[[], object], float]]", windows: Windows) -> "list[tuple[str, float, float]]":
    """Time every run between two SGEMM windows: ``[(label, seconds, GFLOP/s)]``."""
    windows.measure()
    timed: "list[tuple[str, float, float]]" = []
    for label, run, work in runs:
        t0 = time.perf_counter()
        run()
        taken = time.perf_counter() - t0
        timed.append((label, taken, work / taken / 1e9))
        print(f"{label}: {taken:.2f} s, {timed[-1][2]:.1f} GFLOP/s")
        windows.measure()
    return timed


def print_ratios(timed: "list[tuple[str, float, float]]", windows: Windows, problem: "tuple[int, int, int]") -> None:
    """Each run against the reference shape in the faster of its two windows; the target's verdict."""
    # The reference shape is chosen on the whole run's windows (median), so no
    # window can pick whichever shape happened to catch a fast phase; each run
    # is then compared with the faster of its two neighbouring windows, so a
    # slow phase around the run cannot flatter the ratio either.
    ref = reference_shape(windows.rates)
    medians = ", ".join(f"{shape} {rate:.1f}" for shape, rate in median_rates(windows.rates).items())
    print(f"reference shape (highest median sustained rate over the {len(windows.rates)} windows: {medians}): {ref}")
    ps_ratios: "list[tuple[float, float, float]]" = []
    for index, (label, taken, g) in enumerate(timed, start=1):
        before, after = windows.rates[index - 1], windows.rates[index]
        sgemm = max(before[ref][0], after[ref][0])
        fastest = max(rate for w in (before, after) for rate, _ in w.values())
        call = max(c for w in (before, after) for _, c in w.values())
        print(f"{label}: ratio to sgemm throughput {g / sgemm:.3f} (to the fastest shape of its windows "
              f"{g / fastest:.3f}; to their best single call {g / call:.3f}; to the kernel's products alone "
              f"{g / max(windows.alone[index - 1], windows.alone[index]):.3f}) [windows {index - 1}, {index}]")
        if label == "patch_scores":
            ps_ratios.append((g / sgemm, g / fastest, g / call))

    def spread(values: "list[float]") -> str:
        return f"median {float(np.median(values)):.3f} (min {min(values):.3f}, max {max(values):.3f})"

    median = float(np.median([r for r, _, _ in ps_ratios]))
    print(f"patch_scores over {len(ps_ratios)} runs: ratio to sgemm throughput {spread([r for r, _, _ in ps_ratios])}; "
          f"to the fastest shape {spread([r for _, r, _ in ps_ratios])}; to the best single call "
          f"{spread([r for _, _, r in ps_ratios])}")
    print(f"target (median ratio of patch_scores to the sustained sgemm throughput >= {TARGET:.2f}): "
          f"{'met' if median >= TARGET else 'NOT met'} ({median:.3f})"
          + ("" if problem == (160, 784, 512) else "; the target is set for N=160 M=784 D=512"))


def print_memory(bags: np.ndarray, memory_mb: float) -> np.ndarray:
    """Peak extra memory of ``patch_scores`` against its budget, in a separate run; returns the scores."""
    # A separate run: tracemalloc's bookkeeping stays out of the timings.
    n, m, _ = bags.shape
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    scores = patch_scores(bags, memory_mb=memory_mb)
    peak_bytes = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    om = n * m * 8 * 2  # float64 accumulator + float32 result, O(N*M)
    print(
        f"patch_scores peak extra memory (tracemalloc, separate run): {peak_bytes / 2**20:.1f} MiB "
        f"= {peak_bytes / (memory_mb * 2**20 + om):.3f} of budget {memory_mb:g} MiB + O(N*M) {om / 2**20:.1f} MiB"
    )
    return scores


def print_cdist_speedup(bags: np.ndarray, n_pairs: int, t_scores: float) -> None:
    """The per-ordered-pair cdist loop (min over rows for every (i, j), i != j), timed on a sample and extrapolated."""
    n = bags.shape[0]
    pairs = [(i, (i + 1) % n) for i in range(min(n_pairs, n))]
    t0 = time.perf_counter()
    for i, j in pairs:
        cdist(bags[i], bags[j]).min(axis=1)
    t_pair = (time.perf_counter() - t0) / len(pairs)
    t_loop = t_pair * n * (n - 1)
    print(
        f"cdist loop: {t_pair * 1e3:.1f} ms per ordered pair (timed on {len(pairs)} pairs), "
        f"extrapolated {t_loop:.0f} s for all {n * (n - 1)} ordered pairs; speed-up of patch_scores {t_loop / t_scores:.1f}x"
    )


def main(argv: "list[str] | None" = None) -> int:
    args = parse_args(argv)
    n, m, d = args.n, args.m, args.d
    if args.compare_sgemm > 0:
        return compare_sgemm(args.compare_sgemm, m, d, args.memory_mb, n,
                             args.sgemm_seconds if args.sgemm_seconds is not None else 2.0)

    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}); numpy {np.__version__}")
    bags = random_bags(n, m, d)
    flops = n * (n - 1) / 2 * 2.0 * m * m * d
    print(f"problem: N={n} M={m} D={d}  useful work {flops / 1e12:.2f} TFLOP; memory_mb={args.memory_mb:g}")

    sq = args.sgemm_square
    shapes = [(sq, sq, sq), (4 * m, d, 4 * m), (sq // 2, d, sq // 2)]  # default 4096^3, 3136x512x3136, 2048x512x2048
    seconds = args.sgemm_seconds if args.sgemm_seconds is not None else (1.0 if args.quick else 5.0)
    b, workers = plan_tasks(m, d, args.memory_mb, n)
    windows = Windows(shapes, seconds, (m, b * m, d, workers))
    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"kernel plan: tasks of 1 x {b} images, {workers} worker threads; BLAS: {', '.join(blas) or 'none found'}")
    print(f"SGEMM windows ({seconds:g} s per shape) before and after every timed kernel run, then "
          f"{windows.alone_seconds:g} s of the kernel's products alone = {workers} threads, each running "
          f"single-threaded {m}x{d}x{b * m} SGEMMs")

    timed = time_between_windows(timed_runs(args, bags, flops), windows)
    print_ratios(timed, windows, (n, m, d))
    scores = print_memory(bags, args.memory_mb)
    print_cdist_speedup(bags, args.cdist_pairs, min(taken for label, taken, _ in timed if label == "patch_scores"))
    if not np.isfinite(scores).all():  # pragma: no cover - sanity
        print("non-finite scores", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/bench_kernels.py and bench_fused_novelty.py run end to end on a tiny problem and print what they promise."""

from __future__ import annotations

import re

import pytest

import bench_kernels as bench

SHAPE = r"(64x64x64|64x8x64|32x8x32)"


def test_bench_kernels_smoke(capsys):
    code = bench.main(["--n", "6", "--m", "16", "--d", "8", "--memory-mb", "4", "--cdist-pairs", "2", "--normals", "3",
                       "--sgemm-seconds", "0.01", "--rounds", "2", "--sgemm-square", "64"])
    out = capsys.readouterr().out
    assert code == 0
    for pattern in [
        r"machine: \d+ CPUs \(.+\); numpy",
        r"kernel plan: tasks of 1 x \d+ images, \d+ worker threads",
        r"window 0: sgemm sustained 64x64x64 \d+\.\d, 64x8x64 \d+\.\d, 32x8x32 \d+\.\d; "
        r"best single call \d+\.\d; kernel.s products alone \d+\.\d GFLOP/s",
        r"window 4: ",
        r"reference shape \(highest median sustained rate over the 5 windows: 64x64x64 \d+\.\d, 64x8x64 \d+\.\d, "
        r"32x8x32 \d+\.\d\): " + SHAPE,
        r"patch_scores: \d+\.\d\d s, \d+\.\d GFLOP/s",
        r"patch_scores: ratio to sgemm throughput \d\.\d{3} \(to the fastest shape of its windows \d\.\d{3}; "
        r"to their best single call \d\.\d{3}; to the kernel.s products alone \d\.\d{3}\) \[windows 1, 2\]",
        r"hausdorff_distances \(max-min\): ratio to sgemm throughput \d\.\d{3} .*\[windows 2, 3\]",
        r"normal_scores \(6 x 3 normal images\): ratio to sgemm throughput \d\.\d{3} .*\[windows 3, 4\]",
        r"patch_scores over 2 runs: ratio to sgemm throughput median \d\.\d{3} \(min \d\.\d{3}, max \d\.\d{3}\); "
        r"to the fastest shape median \d\.\d{3} \(min \d\.\d{3}, max \d\.\d{3}\); "
        r"to the best single call median \d\.\d{3} \(min \d\.\d{3}, max \d\.\d{3}\)",
        r"target \(median ratio of patch_scores to the sustained sgemm throughput >= 0\.80\): (met|NOT met) "
        r"\(\d\.\d{3}\)",
        r"patch_scores peak extra memory \(tracemalloc, separate run\): \d+\.\d MiB",
        r"speed-up of patch_scores \d+\.\dx",
    ]:
        assert re.search(pattern, out), (pattern, out)
    # The fastest shape of two windows is at least the reference shape's rate there,
    # so the stricter ratio can never exceed the target's.
    for ratio, stricter in re.findall(r"ratio to sgemm throughput (\d\.\d{3}) \(to the fastest shape of its windows (\d\.\d{3})", out):
        assert float(stricter) <= float(ratio)


def test_reference_shape_is_the_highest_median_not_the_luckiest_window():
    # "8x8x8" has the single fastest window (a burst); "4x8x4" is faster in two windows of three.
    windows = [{"8x8x8": (300.0, 0.0), "4x8x4": (100.0, 0.0)},
               {"8x8x8": (90.0, 0.0), "4x8x4": (110.0, 0.0)},
               {"8x8x8": (95.0, 0.0), "4x8x4": (105.0, 0.0)}]
    assert bench.reference_shape(windows) == "4x8x4"
    assert bench.reference_shape(windows[:1]) == "8x8x8"


def test_bench_kernels_compare_sgemm_smoke(capsys):
    code = bench.main(["--m", "16", "--d", "8", "--compare-sgemm", "2", "--sgemm-seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(re.findall(r"sgemm 64x8x64: sustained +\d+\.\d, best single call +\d+\.\d GFLOP/s \| .* ratio \d+\.\d{3}", out)) == 2, out
    assert re.search(r"products alone / sgemm sustained: min \d+\.\d{3}, median \d+\.\d{3}, max \d+\.\d{3}", out), out


@pytest.mark.parametrize("eq7", [False, True])
def test_bench_fused_novelty_smoke(capsys, eq7):
    import bench_fused_novelty

    argv = ["--synthetic", "12", "--patches", "9", "--dim", "8", "--reference-size", "5", "--repeats", "1"]
    assert bench_fused_novelty.main(argv + (["--eq7"] if eq7 else [])) == 0
    out = capsys.readouterr().out
    assert re.search(r"12 images, reference 5, " + ("Eq. 7" if eq7 else "all pairs") +
                     r": separate \d+\.\d\d s, fused \d+\.\d\d s, speed-up \d+\.\d\dx; "
                     r"largest difference: scores 0\.00e\+00, nearest \d\.\d\de[-+]\d\d", out), out

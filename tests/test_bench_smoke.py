"""tools/bench_kernels.py runs end to end on a tiny problem and prints every ratio it promises."""

from __future__ import annotations

import re

from conftest import load_tool


def test_bench_kernels_smoke(capsys):
    bench = load_tool("bench_kernels")
    code = bench.main(["--n", "6", "--m", "16", "--d", "8", "--memory-mb", "4", "--cdist-pairs", "2", "--normals", "3",
                       "--sgemm-seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    for pattern in [
        r"sgemm peak used for the ratios .*: \d+\.\d GFLOP/s",
        r"kernel plan: tasks of 1 x \d+ images, \d+ worker threads",
        r"patch_scores: .* ratio to sgemm peak \d\.\d{3}",
        r"hausdorff_distances \(max-min\): .* ratio to sgemm peak \d\.\d{3}",
        r"normal_scores \(6 x 3 normal images\): .* ratio to sgemm peak \d\.\d{3}",
        r"patch_scores peak extra memory \(tracemalloc, separate run\): \d+\.\d MiB",
        r"speed-up of patch_scores \d+\.\dx",
    ]:
        assert re.search(pattern, out), (pattern, out)

"""tools/check_cuda.py runs its CPU half on real images (the CUDA half needs a GPU: BENCHMARKS.md)."""

from __future__ import annotations

import re

import check_cuda


def test_check_cuda_cpu_half_on_real_images(shared_dir, tmp_path, capsys):
    assert check_cuda.main(["--shared", str(shared_dir), "--devices", "cpu", "--per-type", "2",
                            "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for pattern in [
        r"embedded ResNet-50 v2 on cpu: 8 images in \d+\.\d\d s, providers \['CPUExecutionProvider'\], "
        r"rerun bit-identical: True",
        r"int8 ResNet-18 on cpu: 8 images in .*rerun bit-identical: True",
        r"fit on cpu \(\d+\.\d s, exit 0\): 6 images -> 3 clusters",
    ]:
        assert re.search(pattern, out), (pattern, out)
    assert (tmp_path / "fit_int8_r18_cpu" / "clusters.csv").is_file()


def test_column_differences_names_what_differs():
    a = [{"path": "x.png", "cluster": "0", "distance": "0.100000", "name": "scratch"},
         {"path": "y.png", "cluster": "1", "distance": "0.200000", "name": "crack"}]
    b = [{"path": "x.png", "cluster": "0", "distance": "0.100001", "name": "scratch"},
         {"path": "y.png", "cluster": "2", "distance": "0.200000", "name": "dent"}]
    diffs = check_cuda.column_differences(a, b)
    assert diffs["path"] == "equal"
    assert diffs["cluster"] == "max difference 1"
    assert diffs["distance"] == "max difference 1e-06"
    assert diffs["name"] == "1 rows differ"

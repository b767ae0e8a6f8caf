"""The command-line tool on real data: MVTec AD bottle (test split) with the shared ResNet-18 model.

Observed with the shared int8 ResNet-18 (layer-2 output ``relu_43``), unsupervised
weights, Ward: K=4 gives NMI 0.488; automatic K (the L-method over 3..15) picks
K=5 (NMI 0.502): one of the four bottle types splits in two.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
import pytest

from anomclust_lite.cli.main import main

from _report_html import parse

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def bottle(shared_dir: Path) -> Path:
    folder = shared_dir / "data" / "mvtec" / "bottle" / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


def run_bottle(bottle: Path, shared_model: Path, out: Path, cache_dir: Path, *extra: str) -> int:
    return main([str(bottle), "--model", str(shared_model), "--model-output", "relu_43", "--out", str(out),
                 "--cache-dir", str(cache_dir), "-q", *extra])


def test_bottle_with_k4(bottle: Path, shared_model: Path, cache_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bottle"
    assert run_bottle(bottle, shared_model, out, cache_dir, "--k", "4") == 0
    stdout, err = capsys.readouterr()
    assert err == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 83 and summary["k"] == 4
    assert summary["metrics"]["nmi"] >= 0.35
    printed = float(re.search(r"NMI (\d\.\d+)", stdout).group(1))
    assert printed == pytest.approx(summary["metrics"]["nmi"], abs=1e-3)
    report = parse((out / "report.html").read_text(encoding="utf-8"))
    assert report.sections == [f"cluster-{k}" for k in range(4)]
    assert sum(len(v) for v in report.figures.values()) == 83
    assert summary["labels"]["counts"] == {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20}


def test_bottle_with_automatic_k(bottle: Path, shared_model: Path, cache_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bottle_auto"
    assert run_bottle(bottle, shared_model, out, cache_dir) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    choice = summary["k_choice"]
    assert choice["method"] == "l-method" and sorted(map(int, choice["scores"])) == list(range(3, 16))
    assert int(min(choice["scores"], key=choice["scores"].get)) == summary["k"]
    assert 3 <= summary["k"] <= 6  # the true K is 4
    print(f"automatic K on bottle: {summary['k']} (NMI {summary['metrics']['nmi']:.3f})")

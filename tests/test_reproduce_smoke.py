"""tools/reproduce.py: charts, errors, and a smoke run on bottle (its one-pass helpers are tested in test_sweeps.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import reproduce as R
from _reproduce.charts import line_chart


def test_line_chart_draws():
    img = line_chart([("a", [0.01, 0.1, 1.0], [0.2, 0.5, 0.4])], title="t", x_label="x", y_label="y", log_x=True)
    assert img.size == (720, 440)
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 2  # something was drawn


def test_missing_dataset_returns_error(tmp_path, capsys):
    code = R.main(["--shared", str(tmp_path), "--model", str(tmp_path / "m.onnx"), "--datasets", "bottle",
                   "--out", str(tmp_path / "out")])
    assert code == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_quick_reproduction_on_bottle(shared_dir: Path, shared_model: Path, tmp_path: Path):
    out = tmp_path / "out"
    code = R.main(
        ["--shared", str(shared_dir), "--model", str(shared_model), "--model-output", "relu_43",
         "--datasets", "bottle", "--out", str(out), "--quick"]
    )
    assert code == 0
    for name in ("summary.md", "table1_main.md", "table2_methods.md", "table3_purity.md", "table5_variants.md",
                 "tau.md", "normal_fraction.md", "timing.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert text.startswith("#") and "|---|" in text
    for name in ("tau_unsupervised.png", "tau_semi.png", "normal_fraction.png", "purity_bottle.png"):
        assert (out / name).stat().st_size > 1000
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results = payload["results"]["bottle"]
    assert results["n"] == 83 and results["k"] == 4 and results["n_normal"] == 20
    assert results["table1"]["wa_unsup"]["nmi"] >= 0.40
    assert results["table1"]["max_hausdorff"]["nmi"] >= 0.40
    assert {r["stage"] for r in payload["timing"]} >= {"extract", "unsupervised pass", "semi-supervised pass"}

    # A second run reuses the cached bags and score matrices and gives the same tables.
    assert R.main(["--shared", str(shared_dir), "--model", str(shared_model), "--datasets", "bottle",
                   "--out", str(out), "--quick"]) == 0
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert again["results"]["bottle"]["table1"] == results["table1"]
    stages = {r["stage"] for r in again["timing"]}
    assert "unsupervised pass" not in stages and "score cache lookup" in stages

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
                 "tau.md", "normal_fraction.md", "good_group.md", "timing.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert text.startswith("#") and "|---|" in text
    for name in ("tau_unsupervised.png", "tau_semi.png", "normal_fraction.png", "purity_bottle.png"):
        assert (out / name).stat().st_size > 1000
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results = payload["results"]["bottle"]
    assert results["n"] == 83 and results["k"] == 4 and results["n_normal"] == 20
    assert results["table1"]["wa_unsup"]["nmi"] >= 0.40
    assert results["table1"]["max_hausdorff"]["nmi"] >= 0.40
    good = results["good_group"]
    # bottle: good parts stand out. With --quick's 20 normal images the threshold is their largest
    # leave-one-out score (a 5 % promise needs 19 or more), so a few defective parts count as good too.
    assert good["auto"]["good_size"] > 0 and good["auto"]["good_precision"] >= 0.7
    assert good["auto"]["good_recall"] >= 0.9
    assert set(good["off"]) == set(good["auto"]) and good["off"]["good_size"] == 0
    assert {r["stage"] for r in payload["timing"]} >= {"extract", "unsupervised pass", "semi-supervised pass"}

    # A second run reuses the cached bags and score matrices and gives the same tables.
    assert R.main(["--shared", str(shared_dir), "--model", str(shared_model), "--datasets", "bottle",
                   "--out", str(out), "--quick"]) == 0
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert again["results"]["bottle"]["table1"] == results["table1"]
    stages = {r["stage"] for r in again["timing"]}
    assert "unsupervised pass" not in stages and "score cache lookup" in stages


def test_tables_have_one_column_per_dataset_and_their_mean():
    from _reproduce.tables import normal_fraction_md, table1_md

    def metrics(v):
        return {"nmi": v, "ari": v / 2, "accuracy": 0.5, "f1_macro": 0.25}

    embeddings = ("avg_pool", "max_hausdorff", "wa_unsup", "wa_semi", "wa_mask")
    results = {
        "bottle": {"table1": {e: metrics(0.2) for e in embeddings},
                   "normal_fraction": {"1.0": {"n_normal": 9, "nmi": 0.1}}},
        "other": {"table1": {e: metrics(0.4) for e in embeddings},
                  "normal_fraction": {"1.0": {"n_normal": 7, "nmi": 0.3}}},
    }
    text = table1_md(results)
    assert "| method | bottle | other | mean |\n|---|---|---|---|\n" in text
    assert "| Max-Hausdorff | 0.200 | 0.400 | 0.300 |" in text
    assert "| Max-Hausdorff | 0.100 | 0.200 | 0.150 |" in text  # the ARI table
    # The paper has no number for 'other': its cell is a dash and the mean is bottle's.
    assert "| *paper, WRN-50: WA unsupervised* | 0.495 | – | 0.495 |" in text
    assert "| 100 % | 0.100 (9) | 0.300 (7) | 0.200 |" in normal_fraction_md(results)

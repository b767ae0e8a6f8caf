"""tools/reproduce.py: its one-pass helpers against the package, and a smoke run on bottle."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import hausdorff_distances, normal_scores, patch_scores
from conftest import REPO_ROOT, make_bags


def _load_tool():
    path = REPO_ROOT / "tools" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_tool", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_tool"] = module
    spec.loader.exec_module(module)
    return module


R = _load_tool()


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 9), m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_one_pass_equals_package_functions(n, m, seed):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, n, m, 3)
    # A tiny budget forces many blocks, including off-diagonal ones.
    matches = R.nearest_patch_similarities(bags, memory_mb=0.01, mean_mean=True)
    for agg in R.AGGREGATES:
        for q in (0.1, 0.5):
            want = patch_scores(bags, aggregate=agg, q=q, memory_mb=0.01)
            np.testing.assert_allclose(R.scores_from_matches(matches, aggregate=agg, q=q), want, atol=1e-6)
    for inner in ("max-min", "mean-min", "min-min", "mean-mean"):
        for outer in ("max", "mean"):
            want = hausdorff_distances(bags, inner=inner, outer=outer, memory_mb=0.01)
            got = R.hausdorff_from_matches(matches, inner=inner, outer=outer)
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_mean_mean_needs_the_flag(rng):
    matches = R.nearest_patch_similarities(make_bags(rng, 3, 2, 2), memory_mb=1)
    with pytest.raises(ValueError, match="mean_mean"):
        R.hausdorff_from_matches(matches, inner="mean-mean")


@settings(max_examples=10, deadline=None)
@given(n_normal=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_tiered_normal_scores_equal_normal_scores(n_normal, seed):
    rng = np.random.default_rng(seed)
    bags, normal = make_bags(rng, 4, 5, 3), make_bags(rng, n_normal, 5, 3)
    fractions = (0.3, 0.6, 1.0)
    tiers = R.nested_subsets(n_normal, fractions, seed)
    got = R.tiered_normal_scores(bags, normal, tiers, n_tiers=3, memory_mb=0.01)
    for t in range(3):
        np.testing.assert_allclose(got[t], normal_scores(bags, normal[tiers <= t], memory_mb=0.01), atol=1e-6)


def test_nested_subsets():
    tiers = R.nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=3)
    assert [int((tiers <= t).sum()) for t in range(4)] == [5, 10, 50, 100]
    np.testing.assert_array_equal(tiers, R.nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=3))
    assert not np.array_equal(tiers, R.nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=4))
    assert int((R.nested_subsets(100, (0.5,), seed=0) == 1).sum()) == 50  # outside every subset
    with pytest.raises(ValueError, match="fractions"):
        R.nested_subsets(10, (0.5, 0.2), seed=0)


def test_line_chart_draws():
    img = R.line_chart([("a", [0.01, 0.1, 1.0], [0.2, 0.5, 0.4])], title="t", x_label="x", y_label="y", log_x=True)
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

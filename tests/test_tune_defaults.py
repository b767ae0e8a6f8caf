"""tools/tune_defaults.py: tau rules, the stratified subset, and the tables on saved synthetic scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import anomclust_lite as ac
import tune_defaults as T


def test_spread_rules():
    s = np.array([[0.0, 1.0, 2.0, 3.0, 100.0]], dtype=np.float32)
    assert T.spread(s, "abs") == 1.0
    assert T.spread(s, "std") == pytest.approx(float(np.std(s)))
    # MAD ignores the outlier: median 2, absolute deviations 2, 1, 0, 1, 98 -> median 1
    assert T.spread(s, "mad") == pytest.approx(1.4826)


def test_stratified_keeps_every_class():
    paths = tuple(Path(f"{i}.png") for i in range(30))
    labels = tuple(["a"] * 20 + ["b"] * 6 + ["c"] * 4)
    es = ac.EvalSet("x", paths, labels, (), (None,) * 30)
    sub = T.stratified(es, 0.5, seed=0)
    assert sub.class_counts() == {"a": 10, "b": 3, "c": 2}
    assert set(sub.paths) <= set(paths)
    assert T.stratified(es, 0.5, seed=0) == sub  # seeded
    assert T.stratified(es, 1.0, seed=0) is es


def _fake_set(folder: Path, name: str, rng: np.random.Generator) -> None:
    """Two defect types: a few high-scoring patches point one of two ways."""
    n, m, d = 12, 9, 4
    labels = np.array(["a"] * 6 + ["b"] * 6)
    bags = rng.normal(size=(n, m, d)) * 0.1
    bags[:, :, 0] += 1.0
    scores = rng.uniform(0, 0.1, size=(n, m)).astype(np.float32)
    for i in range(n):
        bags[i, 0, 1 + (labels[i] == "b")] += 3.0
        scores[i, 0] = 1.0
    np.save(folder / f"{name}_bags.npy", ac.normalize_patches(bags).astype(np.float32))
    np.save(folder / f"{name}_labels.npy", labels)
    for key in ("unsup_mean", "unsup_topk_mean0.3", "semi"):
        np.save(folder / f"{name}_{key}.npy", scores)
    np.save(folder / f"{name}_semi_normals.npy", np.array([5, 10]))


def test_tables_on_saved_scores(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    for bb in ("b1", "b2"):
        (tmp_path / bb).mkdir()
        for name in T.SETS:
            _fake_set(tmp_path / bb, name, rng)
    assert T.main(["tables", "--work", str(tmp_path), "--backbones", "b1", "b2", "--subsamples", "2"]) == 0
    out = capsys.readouterr().out
    assert "labelled normals used bottle 5/10" in out
    assert "| unsup_topk_mean0.3 | 0.3 x std |" in out or "unsup_topk_mean0.3" in out
    # the defect patch carries the type: at small tau every set is clustered perfectly
    row = [ln for ln in out.splitlines() if ln.startswith("| unsup b1 |")][0]
    assert row.count("1.000") >= 3
    assert "| unsup paper WRN-50 (NMI) | 0.495 | 0.469 | 0.179 |" in out


def test_weighted_average_equals_the_package():
    rng = np.random.default_rng(1)
    bags = ac.normalize_patches(rng.normal(size=(5, 7, 3))).astype(np.float32)
    w = ac.soft_weights(rng.uniform(size=(5, 7)), 0.1)
    np.testing.assert_allclose(T.weighted_average(bags, w), ac.weighted_average(bags, w), atol=1e-6)


def test_projection_benchmark_on_saved_scores(tmp_path: Path, capsys):
    import bench_projection as P

    rng = np.random.default_rng(1)
    (tmp_path / "b1").mkdir()
    for name in T.SETS:
        _fake_set(tmp_path / "b1", name, rng)
    assert P.main(["--work", str(tmp_path), "--backbones", "b1", "--ranks", "0", "1", "--subsamples", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| b1 |") and line.count("|") == 10]
    assert len(rows) == 4  # the rank table: two score keys x two ranks
    assert all(row.split("|")[-2].strip() == "+0.000" for row in rows if row.split("|")[3].strip() == "0")
    at_defaults = [line for line in out.splitlines() if line.startswith("| b1 |") and line.count("|") == 8]
    assert len(at_defaults) == 2  # D = 4: auto removes nothing, so only r = 0 per mode
    assert "| paper WRN-50 | semi | - | 0.607 | 0.515 | 0.390 | 0.504 |" in out


def test_consensus_benchmark_on_saved_scores(tmp_path: Path, capsys):
    import bench_consensus as C

    rng = np.random.default_rng(2)
    (tmp_path / "b1").mkdir()
    for name in T.SETS:
        _fake_set(tmp_path / "b1", name, rng)
    assert C.main(["--work", str(tmp_path), "--backbones", "b1", "--subsamples", "2", "--noise-draws", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| b1 |")]
    assert len(rows) == 6  # two modes x three sets
    # the defect patch carries the type: both ways cluster every set perfectly, and steadily
    assert all(row.split("|")[4].strip() == row.split("|")[5].strip() == "1.000 / 1.000" for row in rows)
    assert all(row.split("|")[8].strip() == "0.000 / 0.000" for row in rows)
    assert "mean over sets: b1 semi consensus: 1.000" in out

"""The nuisance projection (core/projection.py) and its use by the estimator, model.npz and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import AnomalyClusterer, embed_bags, normalize_patches, nuisance_projection, weighted_average
from anomclust_lite.core.projection import MAX_POSITIONS, Projection, auto_rank, identity_projection
from test_hostile_model_files import _arrays, _refused, _with_header, _write


def _bags(n: int = 24, m: int = 20, d: int = 32, seed: int = 0) -> np.ndarray:
    """Bags whose patches vary most along two 'nuisance' axes; a few patches per image carry one of 3 defects."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m, d)) * 0.1
    x[:, :, 0] += rng.normal(size=(n, m)) * 3.0
    x[:, :, 1] += rng.normal(size=(n, m)) * 2.0
    x[np.arange(n), 0, 2 + np.arange(n) % 3] += 4.0
    return normalize_patches(x).astype(np.float32)


def _naive_subspace(bags: np.ndarray, r: int) -> np.ndarray:
    """Projector onto the top-r principal directions of every patch, from an SVD (reference)."""
    flat = bags.reshape(-1, bags.shape[-1]).astype(np.float64)
    _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
    return vt[:r].T @ vt[:r]


def test_matches_a_naive_pca_of_all_patches():
    bags = _bags()
    p = nuisance_projection(bags, 3)
    assert p.rank == 3 and p.mean.shape == (32,)
    np.testing.assert_allclose(p.components.T @ p.components, _naive_subspace(bags, 3), atol=1e-8)
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(p.mean, bags.reshape(-1, 32).mean(0), atol=1e-6)


def test_removes_the_dominant_axes_and_keeps_the_rest():
    bags = _bags()
    p = nuisance_projection(bags, 2)
    assert set(np.argmax(np.abs(p.components), axis=1)) == {0, 1}
    e = weighted_average(bags, np.full(bags.shape[:2], 1 / bags.shape[1], np.float32))
    out = p.apply(e)
    np.testing.assert_allclose((out - p.mean) @ p.components.T, 0.0, atol=1e-9)
    np.testing.assert_allclose(out[:, 2:], e[:, 2:].astype(np.float64) - ((e - p.mean) @ p.components.T @ p.components)[:, 2:])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), r=st.integers(0, 4))
def test_projecting_the_average_equals_averaging_projected_patches(seed, r):
    rng = np.random.default_rng(seed)
    bags = normalize_patches(rng.normal(size=(5, 7, 6))).astype(np.float32)
    w = rng.random((5, 7))
    w /= w.sum(1, keepdims=True)
    p = nuisance_projection(bags, r)
    before = p.apply(np.einsum("nm,nmd->nd", w, bags.astype(np.float64)))
    after = np.einsum("nm,nmd->nd", w, p.apply(bags.reshape(-1, 6).astype(np.float64)).reshape(5, 7, 6))
    np.testing.assert_allclose(before, after, atol=1e-10)


def test_rank_zero_is_the_identity_and_order_does_not_matter():
    bags = _bags()
    e = np.arange(64.0).reshape(2, 32)
    assert nuisance_projection(bags, 0).apply(e) is e and identity_projection(32).rank == 0
    a, b = nuisance_projection(bags, 4), nuisance_projection(bags[::-1].copy(), 4)
    np.testing.assert_allclose(a.components.T @ a.components, b.components.T @ b.components, atol=1e-9)


def test_large_bags_use_evenly_spaced_positions():
    bags = _bags(n=3, m=MAX_POSITIONS * 2, d=8)
    p = nuisance_projection(bags, 1)
    assert p.rank == 1 and np.isfinite(p.components).all()


@pytest.mark.parametrize("bags,rank,match", [
    (np.zeros((2, 3)), 1, "3-D"),
    (np.zeros((2, 3, 4)), 4, "below the feature dimension 4"),
    (np.zeros((2, 3, 4)), -1, "rank"),
    (np.full((2, 3, 4), np.nan), 1, "bags"),
])
def test_bad_input_is_refused(bags, rank, match):
    with pytest.raises(ValueError, match=match):
        nuisance_projection(bags, rank)


def test_auto_rank():
    assert [auto_rank(d, 8) for d in (8, 16, 64, 128, 512, 1536)] == [0, 1, 4, 8, 8, 8]


# ---------------------------------------------------------------------- estimator


def test_estimator_default_projects_and_zero_is_the_paper():
    bags = _bags()
    paper = AnomalyClusterer(3, project_out=0).fit(bags)
    wa = embed_bags(bags, tau=paper.effective_tau)
    np.testing.assert_allclose(paper.embeddings_, wa.embeddings)
    ours = AnomalyClusterer(3).fit(bags)  # auto: 32 // 16 = 2 directions
    assert ours.projection_.rank == 2
    np.testing.assert_allclose(ours.embeddings_, ours.projection_.apply(wa.embeddings))
    assert set(np.argmax(np.abs(ours.projection_.components), axis=1)) == {0, 1}


def test_projection_is_saved_and_applied_to_assigned_images(tmp_path: Path):
    bags = _bags()
    model = AnomalyClusterer(3, project_out=3).fit(bags)
    model.save(tmp_path / "m.npz")
    loaded = AnomalyClusterer.load(tmp_path / "m.npz")
    assert loaded.project_out == 3 and loaded.projection_.rank == 3
    np.testing.assert_array_equal(loaded.projection_.components, model.projection_.components)
    fresh = _bags(seed=1)
    a, b = model.assign(fresh), loaded.assign(fresh)
    np.testing.assert_array_equal(a.labels, b.labels)
    p = model.projection_
    np.testing.assert_allclose((a.embeddings - p.mean) @ p.components.T, 0.0, atol=1e-9)  # projected like fitting
    assert (loaded.assign(bags).labels == model.labels_).all()


def test_project_out_is_validated():
    with pytest.raises(ValueError, match="project_out must be 'auto' or an integer"):
        AnomalyClusterer(2, project_out="all").validate_params()
    with pytest.raises(ValueError, match="project_out"):
        AnomalyClusterer(2, project_out=-1).validate_params()
    with pytest.raises(ValueError, match="project_out=32 must be below the feature dimension 32"):
        AnomalyClusterer(2, project_out=32).fit(_bags())


# ---------------------------------------------------------------------- model.npz


@pytest.fixture(scope="module")
def projected(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("p") / "model.npz"
    AnomalyClusterer(2, project_out=2).fit(_bags(n=10)).save(path)
    return path


@pytest.mark.parametrize("change,field", [
    (lambda a: {**a, "projection_components": a["projection_components"] * 2}, "not orthonormal"),
    (lambda a: {**a, "projection_components": a["projection_components"][:1]}, "1 rows, which project_out=2"),
    (lambda a: {**a, "projection_mean": np.full(32, np.nan)}, "projection_mean / projection_components"),
    (lambda a: {**a, "projection_mean": np.zeros(31)}, "expected \\(32,\\)"),
    (lambda a: {k: v for k, v in a.items() if k != "projection_mean"}, "missing arrays projection_mean"),
])
def test_damaged_projection_is_refused(tmp_path, projected, change, field):
    _refused(_write(tmp_path / "m.npz", change(_arrays(projected))), field)


def test_version_2_model_reads_as_the_papers_method(tmp_path):
    path = tmp_path / "v3.npz"
    AnomalyClusterer(2, project_out=0).fit(_bags(n=10)).save(path)
    arrays = {k: v for k, v in _arrays(path).items() if not k.startswith("projection_")}
    header = json.loads(arrays["header"].tobytes().decode())
    del header["params"]["project_out"]
    old = _write(tmp_path / "v2.npz", _with_header(arrays, format_version=2, params=header["params"]))
    model = AnomalyClusterer.load(old)
    assert model.project_out == 0 and model.projection_.rank == 0
    assert (model.assign(_bags(n=10)).labels == AnomalyClusterer.load(path).assign(_bags(n=10)).labels).all()
    _refused(_write(tmp_path / "v9.npz", _with_header(arrays, format_version=9)), "reads versions 2, 3")


def test_version_3_semi_model_keeps_the_absolute_tau_it_was_fitted_with(tmp_path):
    """Before format 4 the default semi-supervised tau was the absolute 0.04; such a file must not switch rules."""
    bags, normals, fresh = _bags(n=10), _bags(n=6, seed=3), _bags(n=8, seed=1)
    absolute = AnomalyClusterer(2, weights="semi", tau=0.04).fit(bags, normal_bags=normals)
    absolute.save(tmp_path / "abs.npz")
    arrays = _arrays(tmp_path / "abs.npz")
    header = json.loads(arrays["header"].tobytes().decode())
    assert header["format_version"] >= 4
    params = {**header["params"], "tau": None}  # as a format 3 file fitted at its default
    old = AnomalyClusterer.load(_write(tmp_path / "v3.npz", _with_header(arrays, format_version=3, params=params)))
    assert old.tau == 0.04 and old.effective_tau == 0.04
    np.testing.assert_allclose(old.assign(fresh).distances, absolute.assign(fresh).distances, rtol=1e-6)
    # the same file as format 4 means today's default, which weighs new images otherwise
    new = AnomalyClusterer.load(_write(tmp_path / "v4.npz", _with_header(arrays, format_version=4, params=params)))
    assert new.tau is None and new.effective_tau == "0.4x"
    assert not np.allclose(new.assign(fresh).distances, absolute.assign(fresh).distances, rtol=1e-3)


def test_projection_dataclass_apply_keeps_shape():
    p = Projection(np.zeros(3), np.array([[0.0, 0.0, 1.0]]))
    assert p.apply(np.ones((4, 3))).shape == (4, 3) and p.rank == 1

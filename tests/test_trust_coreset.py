"""The anomaly score and the good group against the compact normal bank (coreset), and ``exact`` unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from anomclust_lite import normal_scores, normalize_patches, patch_scores
from anomclust_lite.core.anomaly import DEFAULT_IMAGE_TOPK, calibrated_threshold, image_scores
from anomclust_lite.core.coreset import coreset_indices, source_rows
from anomclust_lite.core.novelty import nearest_distances, novelty_scores
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from anomclust_lite.estimator.reference import normal_bank
from conftest import defect_bags


@pytest.fixture(scope="module")
def semi_data() -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    bags, types = defect_bags(np.random.default_rng(7), (7, 5, 4))
    normals, _ = defect_bags(np.random.default_rng(9), (), normal=30)
    return bags, types, normals


def _naive_loo(bags: np.ndarray, images: np.ndarray, normals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Distance of each patch of ``bags`` to the nearest patch ``idx`` of another normal image (float64)."""
    m = normals.shape[1]
    flat = normals.reshape(-1, normals.shape[2]).astype(np.float64)
    out = np.empty(bags.shape[:2])
    for i, own in enumerate(images):
        keep = idx[idx // m != own]
        d2 = ((bags[i].astype(np.float64)[:, None, :] - flat[keep][None]) ** 2).sum(axis=2)
        out[i] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_excludes_the_images_own_coreset_patches(seed) -> None:
    rng = np.random.default_rng(seed)
    normals = normalize_patches(rng.normal(size=(6, 10, 5))).astype(np.float32)
    idx = np.sort(rng.choice(60, size=17, replace=False))
    idx = np.union1d(idx, [0, 59])  # at least two source images
    rows, sources = source_rows(normals, idx)
    assert sorted(set(map(tuple, rows.reshape(-1, 5).round(6).tolist()))) == sorted(
        set(map(tuple, normals.reshape(-1, 5)[idx].round(6).tolist())))  # every patch kept, nothing else
    images = np.array([0, 2, 5, 3])
    got = normal_scores(normals[images], rows, groups=(images, sources))
    np.testing.assert_allclose(got, _naive_loo(normals[images], images, normals, idx), atol=2e-3)
    # without the grouping an image finds its own patches (distance 0)
    own = normal_scores(normals[images], rows)
    assert (own <= got + 1e-6).all() and (own < got - 1e-3).any()


def test_groups_are_validated() -> None:
    normals = normalize_patches(np.random.default_rng(0).normal(size=(3, 4, 5))).astype(np.float32)
    with pytest.raises(ValueError, match="groups"):
        normal_scores(normals, normals, groups=(np.arange(2), np.arange(3)))
    with pytest.raises(ValueError, match="second group"):
        normal_scores(normals, normals, groups=(np.zeros(3, np.int64), np.zeros(3, np.int64)))


def test_exact_keeps_the_whole_image_bank(semi_data) -> None:
    """exact=True: scores against the seeded 64-image bank, leave-one-out over its images (as before the coreset)."""
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, exact=True, reference_size=8, good_group="auto")
    model.fit(bags, normal_bags=normals)
    bank = normal_bank(normals, 8, 0)
    np.testing.assert_array_equal(model._reference, bank)
    np.testing.assert_array_equal(model.anomaly_scores_, image_scores(normal_scores(bags, bank), topk=DEFAULT_IMAGE_TOPK))
    loo = image_scores(patch_scores(bank, aggregate="min"), topk=DEFAULT_IMAGE_TOPK)
    assert model.good_threshold_ == calibrated_threshold(loo, model.good_rate)


def test_coreset_scores_and_calibrates_against_the_coreset(semi_data) -> None:
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2, reference_size=8, good_group="auto")
    model.fit(bags, normal_bags=normals)
    np.testing.assert_array_equal(model.anomaly_scores_, image_scores(model.scores_, topk=DEFAULT_IMAGE_TOPK))
    m, d = normals.shape[1:]
    idx = coreset_indices(normals.reshape(-1, d), 40, seed=2)
    assert model._reference.shape[0] == -(-idx.size // m) < 8  # the coreset's rows are stored, not 8 whole images
    images = np.sort(np.random.default_rng(2).choice(normals.shape[0], size=8, replace=False))
    loo = _naive_loo(normals[images], images, normals, idx)
    expected = calibrated_threshold(image_scores(loo.astype(np.float32), topk=DEFAULT_IMAGE_TOPK), model.good_rate)
    assert model.good_threshold_ == pytest.approx(expected, abs=2e-3)


def test_assigned_images_score_as_when_fitted(semi_data, tmp_path) -> None:
    """A fitted image assigned again (features nudged, so it is not recognised) gets about its fitted score."""
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2, good_group="auto")
    model.fit(bags, normal_bags=normals)
    model.save(tmp_path / "model.npz")
    loaded = AnomalyClusterer.load(tmp_path / "model.npz")
    nudged = normalize_patches(bags + np.random.default_rng(0).normal(scale=1e-3, size=bags.shape)).astype(np.float32)
    result = loaded.assign(nudged)
    assert not result.fitted.any()
    np.testing.assert_allclose(result.anomaly_scores, model.anomaly_scores_, atol=1e-2)
    np.testing.assert_array_equal(result.is_good, model.is_good_)


def _naive_novelty_patch_part(bags: np.ndarray, ref_idx: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Top-k mean over each fitted image's patches of the distance to the nearest coreset patch ``idx`` of the
    reference images ``ref_idx`` (flattened), the image's own patches left out (float64)."""
    m = bags.shape[1]
    flat = bags[ref_idx].reshape(-1, bags.shape[2]).astype(np.float16).astype(np.float64)
    out = np.empty(bags.shape[:2])
    for i in range(bags.shape[0]):
        own = np.flatnonzero(ref_idx == i)
        keep = idx[idx // m != own[0]] if own.size else idx
        d2 = ((bags[i].astype(np.float64)[:, None, :] - flat[keep][None]) ** 2).sum(axis=2)
        out[i] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return image_scores(out.astype(np.float32), topk=DEFAULT_IMAGE_TOPK)


def test_novelty_reference_is_a_coreset_of_the_reference_images(semi_data, tmp_path) -> None:
    """Semi-supervised with a compact bank: the novelty reference stores ``bank_size`` patches of the
    ``reference_size`` images, calibrated leave-one-out against them; the file shrinks."""
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2, reference_size=8)
    model.fit(bags, normal_bags=normals)
    m, d = bags.shape[1:]
    ref_idx = np.sort(np.random.default_rng(2).choice(bags.shape[0], size=8, replace=False))
    idx = coreset_indices(bags[ref_idx].reshape(-1, d), 40, seed=2)
    reference = model._fitted_state.novelty.reference
    assert reference.shape == (-(-idx.size // m), m, d) and reference.dtype == np.float16
    assert set(map(tuple, reference.reshape(-1, d).tolist())) == set(
        map(tuple, bags[ref_idx].reshape(-1, d)[idx].astype(np.float16).tolist()))
    novelty = model._fitted_state.novelty
    patch_part = _naive_novelty_patch_part(bags, ref_idx, idx)
    assert novelty.scales[1] == pytest.approx(np.median(patch_part), abs=2e-3)
    emb_part = nearest_distances(novelty.embeddings, novelty.embeddings, leave_one_out=True)
    np.testing.assert_allclose(novelty_scores(emb_part, patch_part, *novelty.scales), novelty.fitted, rtol=2e-3)
    exact = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2, reference_size=8, exact=True)
    exact.fit(bags, normal_bags=normals)
    assert exact._fitted_state.novelty.reference.shape == (8, m, d)
    model.save(tmp_path / "compact.npz")
    exact.save(tmp_path / "exact.npz")
    assert (tmp_path / "compact.npz").stat().st_size < (tmp_path / "exact.npz").stat().st_size
    loaded = AnomalyClusterer.load(tmp_path / "compact.npz")
    nudged = normalize_patches(bags + np.random.default_rng(0).normal(scale=1e-3, size=bags.shape)).astype(np.float32)
    np.testing.assert_allclose(loaded.assign(nudged).novelty, model.assign(nudged).novelty, rtol=1e-6)


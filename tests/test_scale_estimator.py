"""AnomalyClusterer at scale: the compact normal bank (bank_size / exact)."""

from __future__ import annotations

import numpy as np
import pytest

from anomclust_lite import compact_bank, normal_scores, patch_scores
from anomclust_lite.estimator import scale
from anomclust_lite.core.defaults import DEFAULT_BANK_SIZE
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from anomclust_lite.metrics import nmi
from conftest import defect_bags

M, D = 16, 24


@pytest.fixture(scope="module")
def semi_data() -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    bags, types = defect_bags(np.random.default_rng(7), (7, 5, 4))
    normals, _ = defect_bags(np.random.default_rng(9), (), normal=30)
    return bags, types, normals


def test_exact_scores_against_every_normal_patch(semi_data) -> None:
    bags, types, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, exact=True).fit(bags, normal_bags=normals)
    np.testing.assert_array_equal(model.scores_, normal_scores(bags, normals))
    assert nmi(types, model.labels_) == pytest.approx(1.0)


def test_coreset_bank_scores_against_the_coreset(semi_data) -> None:
    bags, types, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2).fit(bags, normal_bags=normals)
    np.testing.assert_array_equal(model.scores_, normal_scores(bags, compact_bank(normals, 40, seed=2)))
    exact = normal_scores(bags, normals)
    assert (model.scores_ >= exact - 1e-4).all() and not np.allclose(model.scores_, exact, atol=1e-3)
    assert nmi(types, model.labels_) == pytest.approx(1.0)  # 40 of 480 patches still find the types
    again = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2).fit(bags, normal_bags=normals)
    np.testing.assert_array_equal(again.scores_, model.scores_)  # deterministic given seed


def test_default_keeps_a_small_bank_whole(semi_data) -> None:
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi").fit(bags, normal_bags=normals)
    assert model.bank_size == DEFAULT_BANK_SIZE and model.exact is False
    np.testing.assert_array_equal(model.scores_, normal_scores(bags, normals))


def test_bank_params_follow_the_estimator_conventions(semi_data, tmp_path) -> None:
    bags, _, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", bank_size=0.5, exact=True)
    assert model.get_params()["bank_size"] == 0.5 and model.get_params()["exact"] is True
    assert "bank_size=0.5" in repr(model) and "exact=True" in repr(model)
    model.set_params(bank_size=64, exact=False).fit(bags, normal_bags=normals)
    model.save(tmp_path / "m.npz")
    loaded = AnomalyClusterer.load(tmp_path / "m.npz")
    assert loaded.get_params() == model.get_params()
    assert loaded.bank_size == 64 and loaded.exact is False


@pytest.mark.parametrize("kwargs", [{"bank_size": 0}, {"bank_size": 1.5}, {"bank_size": "all"},
                                    {"bank_size": None}, {"exact": "yes"}, {"exact": 1}])
def test_bad_bank_params_are_named(kwargs, semi_data) -> None:
    bags, _, normals = semi_data
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AnomalyClusterer(3, weights="semi", **kwargs).fit(bags, normal_bags=normals)


# ---------------------------------------------------------------- unsupervised at scale


@pytest.fixture(scope="module")
def many() -> "tuple[np.ndarray, np.ndarray]":
    return defect_bags(np.random.default_rng(3), (30, 25, 20))


def test_eq7_reference_subsample_above_score_reference(many) -> None:
    bags, types = many
    model = AnomalyClusterer(3, score_reference=20, subsample_from=50, seed=5).fit(bags)
    ref = np.sort(np.random.default_rng(5).choice(len(bags), size=20, replace=False))
    np.testing.assert_array_equal(model.scores_, patch_scores(bags, reference=ref))
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    full = AnomalyClusterer(3, score_reference=20, subsample_from=50, exact=True).fit(bags)
    np.testing.assert_array_equal(full.scores_, patch_scores(bags))
    below = AnomalyClusterer(3, score_reference=20, subsample_from=76).fit(bags)  # N = 75: below the switch-over
    np.testing.assert_array_equal(below.scores_, full.scores_)
    assert AnomalyClusterer(3, score_reference=75, subsample_from=50).fit(bags).scores_.tolist() == full.scores_.tolist()


def test_fit_sample_then_assign_the_rest(many, monkeypatch) -> None:
    bags, types = many
    monkeypatch.setattr(scale, "CHUNK_BYTES", 7 * M * D * 4)  # chunks of 7 images
    model = AnomalyClusterer(3, fit_size=50, seed=1).fit(bags)
    n = len(bags)
    sample = model.fit_sample_
    assert sample.tolist() == np.sort(np.random.default_rng(1).choice(n, 50, replace=False)).tolist()
    assert model.labels_.shape == (n,) and model.distances_ is None and model.linkage_ is None
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    fitted = AnomalyClusterer(3, seed=1).fit(bags[sample])
    np.testing.assert_array_equal(model.labels_[sample], fitted.labels_)
    rest = np.setdiff1d(np.arange(n), sample)
    assigned = fitted.assign(bags[rest])
    np.testing.assert_array_equal(model.labels_[rest], assigned.labels)
    np.testing.assert_allclose(model.scores_[rest], assigned.scores)
    np.testing.assert_allclose(model.center_distances_[rest], assigned.distances)
    for attr in ("anomaly_scores_", "confidence_", "is_good_", "center_distances_"):
        assert getattr(model, attr).shape == (n,)
    assert model.medoids_.min() >= 0 and np.isin(model.medoids_, sample).all()
    again = model.assign(bags)  # every image is recognised as fitted
    assert again.fitted.all() and (again.labels == model.labels_).all()


def test_fit_sample_reads_a_memory_map(many, tmp_path) -> None:
    bags, types = many
    np.save(tmp_path / "bags.npy", bags.astype(np.float16))
    mm = np.load(tmp_path / "bags.npy", mmap_mode="r")
    model = AnomalyClusterer(3, fit_size=40, bag_dtype="float16").fit(mm)
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    model.save(tmp_path / "m.npz")
    loaded = AnomalyClusterer.load(tmp_path / "m.npz")
    assert (loaded.assign(bags).labels == model.labels_).all()


def test_rows_of_a_memory_map_are_plain_copies(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(scale, "CHUNK_BYTES", 2 * 3 * 2 * 2)  # two images per mapping
    x = np.arange(5 * 3 * 2, dtype=np.float16).reshape(5, 3, 2)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = scale.rows_of(mm, np.array([4, 1, 3, 0, 2]))
    assert type(got) is np.ndarray and np.array_equal(got, x[[4, 1, 3, 0, 2]])
    assert np.array_equal(scale.rows_of(x, np.array([0, 2])), x[[0, 2]])
    view = mm[2:]  # a view keeps the file's offset of the whole map: read through it, not remapped
    assert np.array_equal(scale.rows_of(view, np.array([0, 2])), x[[2, 4]])


def test_exact_fits_every_image_at_once(many) -> None:
    bags, _ = many
    model = AnomalyClusterer(3, fit_size=50, exact=True).fit(bags)
    assert model.fit_sample_ is None and model.distances_.shape == (len(bags), len(bags))


def test_semi_supervised_sample_then_assign(semi_data) -> None:
    bags, types, normals = semi_data
    model = AnomalyClusterer(3, weights="semi", fit_size=12, good_group="auto").fit(bags, normal_bags=normals)
    assert model.labels_.shape == (len(bags),) and model.fit_sample_.size == 12
    assert nmi(types, model.labels_) > 0.6


def test_cli_exact_switches_every_approximation_off(tmp_path) -> None:
    from anomclust_lite.cli.cluster import build_clusterer
    from anomclust_lite.cli.parser import build_parser

    parser = build_parser()
    default = build_clusterer(parser.parse_args([str(tmp_path)]), "semi")
    exact = build_clusterer(parser.parse_args([str(tmp_path), "--exact"]), "semi")
    assert default.exact is False and exact.exact is True
    assert "--exact" in parser.format_help() and "coreset" in parser.format_help()


def test_coreset_is_cached_with_the_normal_bank(semi_data, tmp_path) -> None:
    from anomclust_lite import CacheFolder

    bags, _, normals = semi_data
    cache = CacheFolder(tmp_path / "cache")
    cold = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2).fit(bags, normal_bags=normals, cache=cache)
    warm = AnomalyClusterer(3, weights="semi", bank_size=40, seed=2).fit(bags, normal_bags=normals, cache=cache)
    assert "choosing the normal bank's coreset" in warm.cached_steps_
    assert {"choosing the novelty reference's coreset", "calibrating novelty"} <= set(warm.cached_steps_)
    np.testing.assert_array_equal(warm.scores_, cold.scores_)
    np.testing.assert_array_equal(warm._fitted_state.novelty.fitted, cold._fitted_state.novelty.fitted)
    other = AnomalyClusterer(3, weights="semi", bank_size=41, seed=2).fit(bags, normal_bags=normals, cache=cache)
    assert "choosing the normal bank's coreset" not in other.cached_steps_
    assert "calibrating novelty" not in other.cached_steps_  # another coreset of the novelty reference
    assert not np.array_equal(other.scores_, cold.scores_)

"""AnomalyClusterer's trust signals: anomaly scores, the good group, confidence, novelty, and their model.npz."""

from pathlib import Path

import numpy as np
import pytest

from anomclust_lite import AnomalyClusterer
from anomclust_lite.metrics import nmi
from conftest import defect_bags


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(3)
    bags, types = defect_bags(rng, (6, 5, 4), normal=6)
    normals, _ = defect_bags(rng, (), normal=12)
    return bags, types, normals


def test_anomaly_scores_and_good_group_reported_when_off(sets) -> None:
    bags, types, normals = sets
    model = AnomalyClusterer(4, weights="semi").fit(bags, normal_bags=normals)
    good = types < 0
    assert model.anomaly_scores_.shape == (len(types),)
    assert model.anomaly_scores_[~good].min() > model.anomaly_scores_[good].max()
    assert model.good_threshold_ is not None and not model.good_group_
    assert model.is_good_[good].all() and not model.is_good_[~good].any()
    assert (model.labels_ >= 0).all() and model.k_ == 4  # off: every image clustered


def test_good_group_auto_sets_good_images_apart_and_counts_defect_clusters(sets) -> None:
    bags, types, normals = sets
    model = AnomalyClusterer(3, weights="semi", good_group="auto").fit(bags, normal_bags=normals)
    good = types < 0
    assert model.good_group_ and (model.labels_[good] == -1).all()
    assert model.k_ == 3 and nmi(types[~good], model.labels_[~good]) == pytest.approx(1.0)
    assert np.isnan(model.confidence_[good]).all() and (model.confidence_[~good] >= 0).all()
    a = model.assign(bags[:3] + 0)  # fitted images keep their group
    assert (a.labels == -1).all() and a.is_good.all() and not a.new_type.any()
    fresh, _ = defect_bags(np.random.default_rng(9), (), normal=4)
    b = model.assign(fresh)
    assert b.is_good.all() and (b.labels == -1).all() and not b.new_type.any()  # good parts are not new types


def test_without_normal_images_nothing_is_good_and_auto_clusters_everything(sets) -> None:
    bags, types, _ = sets
    model = AnomalyClusterer(4, good_group="auto").fit(bags)
    assert model.good_threshold_ is None and not model.is_good_.any() and not model.good_group_
    assert (model.labels_ >= 0).all()
    good = types < 0
    assert model.anomaly_scores_[~good].mean() > model.anomaly_scores_[good].mean()


def test_good_group_refuses_too_few_defect_images(sets) -> None:
    bags, types, normals = sets
    with pytest.raises(ValueError, match="outside the good group.*good_group='off'"):
        AnomalyClusterer(7, weights="semi", good_group="auto").fit(bags[types < 1], normal_bags=normals)


def test_confidence_cohesion_and_weak_verdict(sets) -> None:
    bags, types, _ = sets
    model = AnomalyClusterer(4).fit(bags)
    assert ((model.confidence_ >= 0) & (model.confidence_ <= 1)).all()
    for c in range(model.k_):
        assert model.cohesion_[c] == pytest.approx(model.confidence_[model.labels_ == c].mean())
    assert model.weak_ == []


@pytest.mark.parametrize("sizes, k, weak", [((60, 40), 2, False), ((76, 24), 2, True), ((50, 25, 25), 3, False),
                                            ((51, 25, 24), 3, True), ((40, 20, 20, 20), 4, False)])
def test_weak_when_one_cluster_holds_too_much(sizes, k, weak) -> None:
    from anomclust_lite.estimator.trust import confidence_summary

    labels = np.repeat(np.arange(k), sizes)
    centers = np.eye(k, 3) * 10.0
    embeddings = centers[labels] + np.random.default_rng(0).normal(scale=0.01, size=(labels.size, 3))
    _, _, reasons = confidence_summary(embeddings, centers, labels)
    assert any("one cluster holds" in r for r in reasons) == weak


def test_scores_do_not_depend_on_image_order_or_memory_budget(sets) -> None:
    bags, _, normals = sets
    base = AnomalyClusterer(4, weights="semi").fit(bags, normal_bags=normals)
    perm = np.random.default_rng(0).permutation(len(bags))
    other = AnomalyClusterer(4, weights="semi", memory_mb=0.05).fit(bags[perm], normal_bags=normals)
    np.testing.assert_allclose(other.anomaly_scores_, base.anomaly_scores_[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other.confidence_, base.confidence_[perm], rtol=1e-4, atol=1e-5)
    new, _ = defect_bags(np.random.default_rng(5), (2,), defect_dims=(9,))
    a, b = base.assign(new), other.assign(new)
    np.testing.assert_allclose(a.anomaly_scores, b.anomaly_scores, rtol=1e-5, atol=1e-6)


def test_thresholds_are_monotone_in_the_stated_rates(sets) -> None:
    bags, _, normals = sets
    fits = [AnomalyClusterer(4, weights="semi", good_rate=r, new_type_rate=r).fit(bags, normal_bags=normals)
            for r in (0.0, 0.1, 0.3)]
    goods = [f.good_threshold_ for f in fits]
    assert goods[0] >= goods[1] >= goods[2]
    for lo, hi in zip(fits, fits[1:]):
        assert (hi.novelty_thresholds_ <= lo.novelty_thresholds_).all()
    with pytest.raises(ValueError, match="good_rate must be in"):
        AnomalyClusterer(2, good_rate=1.5).fit(bags)
    with pytest.raises(ValueError, match="good_group must be one of"):
        AnomalyClusterer(2, good_group="on").fit(bags)


def test_new_type_is_flagged_and_seen_types_are_not(sets) -> None:
    bags, types, _ = sets
    model = AnomalyClusterer(4).fit(bags)
    rng = np.random.default_rng(21)
    seen, _ = defect_bags(rng, (2, 2, 2))
    novel, _ = defect_bags(rng, (4,), defect_dims=(10,))
    a_seen, a_new = model.assign(seen), model.assign(novel)
    assert a_new.novelty.min() > np.median(a_seen.novelty)
    assert a_new.new_type.mean() > a_seen.new_type.mean()


def test_model_file_keeps_the_trust_state_and_rejects_damaged_arrays(tmp_path: Path, sets) -> None:
    bags, _, normals = sets
    model = AnomalyClusterer(3, weights="semi", good_group="auto").fit(bags, normal_bags=normals)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = AnomalyClusterer.load(path)
    assert loaded.good_group_ and loaded.good_threshold_ == model.good_threshold_
    np.testing.assert_array_equal(loaded.is_good_, model.is_good_)
    np.testing.assert_array_equal(loaded.novelty_thresholds_, model.novelty_thresholds_)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key, bad in (("novelty_thresholds", np.array([np.nan])), ("novelty_scales", np.zeros(2)),
                     ("anomaly_scores", np.zeros(3))):
        broken = dict(arrays, **{key: bad})
        np.savez(tmp_path / "bad.npz", **broken)
        with pytest.raises(ValueError, match="corrupt"):
            AnomalyClusterer.load(tmp_path / "bad.npz")

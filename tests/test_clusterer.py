"""Tests of AnomalyClusterer: fit, canonical labels, assign, save/load."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from anomclust_lite import cross_patch_scores, normalize_patches, patch_scores, soft_weights, weighted_average
from anomclust_lite.estimator.assign import Assignment
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from anomclust_lite.estimator.model_io import MODEL_FORMAT_VERSION
from anomclust_lite.estimator.params import DISTANCES
from anomclust_lite.clustering.dispatch import METHODS
from anomclust_lite.core.defaults import DEFAULT_TAU_SEMI, DEFAULT_TAU_UNSUPERVISED
from anomclust_lite.metrics import nmi
from conftest import defect_bags

M, D = 16, 24


@pytest.fixture(scope="module")
def data() -> "tuple[np.ndarray, np.ndarray]":
    return defect_bags(np.random.default_rng(7), (7, 5, 4))


def perturb(bags: np.ndarray, seed: int = 1, scale: float = 1e-3) -> np.ndarray:
    noisy = bags + np.random.default_rng(seed).normal(scale=scale, size=bags.shape)
    return normalize_patches(noisy).astype(np.float32)


def test_fit_recovers_the_types_with_canonical_labels(data) -> None:
    bags, types = data
    model = AnomalyClusterer(3).fit(bags)
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    assert np.bincount(model.labels_).tolist() == [7, 5, 4]  # cluster 0 is the largest
    n = len(types)
    assert model.scores_.shape == model.weights_.shape == (n, M)
    np.testing.assert_allclose(model.weights_.sum(axis=1), 1.0, rtol=1e-5)
    assert model.embeddings_.shape == (n, D) and model.centers_.shape == (3, D)
    assert model.distances_.shape == (n, n) and model.linkage_.shape == (n - 1, 4)
    assert (model.k_, model.k_choice_.method) == (3, "fixed")
    for c in range(3):
        np.testing.assert_allclose(model.centers_[c], model.embeddings_[model.labels_ == c].mean(axis=0))
    expected = np.linalg.norm(model.embeddings_ - model.centers_[model.labels_], axis=1)
    np.testing.assert_allclose(model.center_distances_, expected)
    assert model.new_type_threshold_ is None  # per-cluster novelty thresholds instead
    assert model.novelty_thresholds_.shape == (3,) and (model.novelty_thresholds_ > 0).all()
    assert set(model.timings_) >= {"scoring", "distances", "clustering"}


def test_fit_follows_the_paper_pipeline(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, project_out=0).fit(bags)
    scores = patch_scores(bags)
    np.testing.assert_allclose(model.scores_, scores)
    np.testing.assert_allclose(model.weights_, soft_weights(scores, DEFAULT_TAU_UNSUPERVISED))
    np.testing.assert_allclose(model.embeddings_, weighted_average(bags, model.weights_))
    assert model.effective_tau == DEFAULT_TAU_UNSUPERVISED
    ours = AnomalyClusterer(3).fit(bags)  # the default adds the nuisance projection, nothing else
    assert ours.projection_.rank > 0
    np.testing.assert_allclose(ours.embeddings_, ours.projection_.apply(weighted_average(bags, ours.weights_)))


def test_auto_k_finds_the_three_types(data) -> None:
    bags, types = data
    model = AnomalyClusterer().fit(bags)
    assert model.k_choice_.method == "l-method"
    assert model.k_ == 3
    assert nmi(types, model.labels_) == pytest.approx(1.0)


def test_fit_is_deterministic(data) -> None:
    bags, _ = data
    a = AnomalyClusterer(method="kmeans", seed=3).fit(bags)
    b = AnomalyClusterer(method="kmeans", seed=3).fit(bags)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a._reference, b._reference)


@pytest.mark.parametrize("method", METHODS)
def test_every_method(data, method: str) -> None:
    bags, types = data
    model = AnomalyClusterer(3, method=method).fit(bags)
    assert model.k_ == 3
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    assert (model.linkage_ is not None) == (method in ("ward", "complete", "average", "single"))


@pytest.mark.parametrize("distance", [d for d in DISTANCES if d != "wa"])
def test_hausdorff_distances_use_medoids(data, distance: str) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, distance=distance, method="average").fit(bags)
    n = len(bags)
    for c in range(model.k_):
        members = np.flatnonzero(model.labels_ == c)
        assert model.medoids_[c] in members
        sums = model.distances_[np.ix_(members, members)].sum(axis=1)
        assert sums[list(members).index(model.medoids_[c])] == pytest.approx(sums.min())
    np.testing.assert_allclose(model.center_distances_, model.distances_[np.arange(n), model.medoids_[model.labels_]])


@pytest.mark.parametrize("weights", ["uniform", "topk"])
def test_other_weight_modes(data, weights: str) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, weights=weights).fit(bags)
    if weights == "uniform":
        np.testing.assert_allclose(model.weights_, 1.0 / M)
    else:  # default topk: a tenth of the patches, equal weights
        assert ((model.weights_ > 0).sum(axis=1) == M // 10).all()


def test_semi_supervised(data) -> None:
    bags, types = data
    normals, _ = defect_bags(np.random.default_rng(9), (10,), defect_dims=(4,))  # "defect" along a normal axis
    model = AnomalyClusterer(3, weights="semi").fit(bags, normal_bags=normals)
    assert model.effective_tau == DEFAULT_TAU_SEMI
    assert nmi(types, model.labels_) == pytest.approx(1.0)
    assert model._reference_kind == "normal-patches"
    assert model._reference.shape == normals.shape and model._reference.dtype == np.float16
    again = model.assign(perturb(bags))
    np.testing.assert_array_equal(again.labels, model.labels_)


def test_semi_supervised_normal_bank_is_capped(data) -> None:
    bags, _ = data
    normals, _ = defect_bags(np.random.default_rng(9), (10,), defect_dims=(4,))
    model = AnomalyClusterer(2, weights="semi", reference_size=3).fit(bags, normal_bags=normals)
    assert model._reference.shape == (3, M, D)
    flat = normals.reshape(-1, D).astype(np.float16)
    stored = model._reference.reshape(-1, D)
    assert {r.tobytes() for r in stored} <= {r.tobytes() for r in flat}  # a subsample of the normal patches


def test_weight_mode_and_normal_bags_must_agree(data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match="normal_bags"):
        AnomalyClusterer(2, weights="semi").fit(bags)
    with pytest.raises(ValueError, match="normal_bags"):
        AnomalyClusterer(2).fit(bags, normal_bags=bags)


def test_reference_subsample(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, reference_size=5, seed=4).fit(bags)
    ref = model._reference
    assert ref.shape == (5, M, D) and ref.dtype == np.float16
    rows = {b.astype(np.float16).tobytes(): i for i, b in enumerate(bags)}
    assert all(r.tobytes() in rows for r in ref)
    assert AnomalyClusterer(3, reference_size=100).fit(bags)._reference.shape[0] == len(bags)


# ---------------------------------------------------------------- assign


def test_assigning_the_fitted_images_gives_their_clusters(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3).fit(bags)
    a = model.assign(bags)
    assert isinstance(a, Assignment)
    np.testing.assert_array_equal(a.labels, model.labels_)
    assert a.fitted.all() and not a.new_type.any()
    np.testing.assert_allclose(a.distances, model.center_distances_)
    np.testing.assert_array_equal(model.predict(bags), model.labels_)


def test_assigning_near_copies_goes_through_the_nearest_centre(data) -> None:
    """Not recognised as fitted images: weights from the stored reference, nearest centre."""
    bags, _ = data
    model = AnomalyClusterer(3).fit(bags)  # the reference holds every fitted image
    a = model.assign(perturb(bags))
    assert not a.fitted.any()
    np.testing.assert_array_equal(a.labels, model.labels_)
    np.testing.assert_allclose(a.distances, model.center_distances_, atol=0.05)
    assert not a.new_type.any()
    small = AnomalyClusterer(3, reference_size=6).fit(bags)  # a small reference still finds the clusters
    np.testing.assert_array_equal(small.assign(perturb(bags)).labels, small.labels_)


def test_assign_weights_new_images_against_the_stored_reference(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, reference_size=6).fit(bags)
    new, _ = defect_bags(np.random.default_rng(5), (2, 2, 2))
    a = model.assign(new)
    scores = cross_patch_scores(new, model._reference.astype(np.float32))
    emb = model.projection_.apply(weighted_average(new, soft_weights(scores, DEFAULT_TAU_UNSUPERVISED)))
    d = np.linalg.norm(emb[:, None, :] - model.centers_[None], axis=2)
    np.testing.assert_array_equal(a.labels, d.argmin(axis=1))
    np.testing.assert_allclose(a.distances, d.min(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(a.labels, [0, 0, 1, 1, 2, 2])  # the new images of each type


def test_assign_flags_a_new_defect_type(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3).fit(bags)
    novel, _ = defect_bags(np.random.default_rng(11), (3,), defect_dims=(10,))
    a = model.assign(novel)
    assert a.new_type.all() and not a.fitted.any()
    assert (a.novelty > a.thresholds[a.labels]).all() and a.threshold is None
    assert not model.assign(novel, new_type_threshold=1e6).new_type.any()
    assert not model.assign(bags).new_type.any()  # fitted images never are


def test_assign_validates(data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match="not fitted"):
        AnomalyClusterer(3).assign(bags)
    model = AnomalyClusterer(3).fit(bags)
    with pytest.raises(ValueError, match="bags"):
        model.assign(bags[:, :, :10] / np.linalg.norm(bags[:, :, :10], axis=-1, keepdims=True))
    with pytest.raises(ValueError, match="new_type_threshold"):
        model.assign(bags, new_type_threshold=-1.0)


def test_fit_paths_uses_the_extractor(data) -> None:
    bags, _ = data

    class FakeExtractor:
        def __init__(self) -> None:
            self.calls = []

        def extract(self, paths):  # type: ignore[no-untyped-def]
            self.calls.append(list(paths))
            return bags[: len(paths)]

    fake = FakeExtractor()
    model = AnomalyClusterer(3).fit_paths([f"{i}.png" for i in range(len(bags))], fake)
    assert model.k_ == 3 and len(fake.calls) == 1


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path: Path, data) -> None:
    bags, _ = data
    model = AnomalyClusterer(3, tau=0.1, aggregate="max", reference_size=6).fit(bags)
    path = tmp_path / "model.npz"
    model.save(path, metadata={"extractor": {"output": "relu_43"}})
    assert not list(tmp_path.glob("*.tmp"))
    with np.load(path, allow_pickle=False) as f:  # plain arrays only
        assert set(f.files) == {"header", "centers", "labels", "fitted_distances", "fitted_hashes", "reference",
                                "anomaly_scores", "novelty_embeddings", "novelty_scales", "novelty_thresholds",
                                "novelty_fitted", "novelty_reference", "projection_mean", "projection_components"}
    loaded = AnomalyClusterer.load(path)
    assert loaded.get_params() == model.get_params()
    assert loaded.metadata_ == {"extractor": {"output": "relu_43"}}
    assert loaded.k_choice_ == model.k_choice_
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    for new in (bags, perturb(bags)):
        a, b = model.assign(new), loaded.assign(new)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.distances, b.distances)
        np.testing.assert_array_equal(a.new_type, b.new_type)
        np.testing.assert_allclose(a.novelty, b.novelty)
        np.testing.assert_allclose(a.anomaly_scores, b.anomaly_scores)
        np.testing.assert_allclose(a.confidence, b.confidence)
    np.testing.assert_array_equal(loaded.anomaly_scores_, model.anomaly_scores_)
    assert loaded.scores_ is None and loaded.embeddings_ is None


def _rewrite(src: Path, dst: Path, **changes) -> None:
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(dst, **arrays)


def _header(src: Path, **changes) -> np.ndarray:
    with np.load(src, allow_pickle=False) as f:
        header = json.loads(f["header"].tobytes().decode())
    header.update(changes)
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_load_rejects_damaged_or_foreign_files(tmp_path: Path, data) -> None:
    bags, _ = data
    good = tmp_path / "model.npz"
    AnomalyClusterer(3).fit(bags).save(good)
    bad = tmp_path / "bad.npz"

    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt or from an incompatible version"):
        AnomalyClusterer.load(bad)

    raw = good.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        AnomalyClusterer.load(bad)

    cases = [
        {"centers": None},
        {"header": np.frombuffer(b"{not json", dtype=np.uint8)},
        {"header": _header(good, format_version=MODEL_FORMAT_VERSION + 1)},
        {"header": _header(good, format="something.else")},
        {"header": _header(good, k=5)},
        {"header": _header(good, params={"k": "three"})},
        {"labels": np.full(len(bags), 7, dtype=np.int64)},
        {"fitted_hashes": np.zeros((3, 16), dtype=np.uint8)},
        {"reference": np.zeros((2, M, D + 1), dtype=np.float16)},
    ]
    for change in cases:
        _rewrite(good, bad, **change)
        with pytest.raises(ValueError, match="corrupt or from an incompatible version"):
            AnomalyClusterer.load(bad)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        AnomalyClusterer.load(tmp_path / "missing.npz")


def test_load_refuses_pickled_object_arrays(tmp_path: Path, data) -> None:
    bags, _ = data
    good = tmp_path / "model.npz"
    AnomalyClusterer(3).fit(bags).save(good)
    bad = tmp_path / "pickled.npz"
    with np.load(good, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["labels"] = np.array([object()] * len(bags), dtype=object)
    np.savez(bad, **arrays)
    assert zipfile.is_zipfile(bad)
    with pytest.raises(ValueError, match="corrupt"):
        AnomalyClusterer.load(bad)


def test_save_needs_a_fitted_model_and_json_metadata(tmp_path: Path, data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match="not fitted"):
        AnomalyClusterer(3).save(tmp_path / "m.npz")
    model = AnomalyClusterer(3).fit(bags)
    with pytest.raises(ValueError, match="metadata"):
        model.save(tmp_path / "m.npz", metadata={"x": object()})
    with pytest.raises(ValueError, match="metadata"):
        model.save(tmp_path / "m.npz", metadata={"x": float("nan")})


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k"),
        ({"weights": "soft"}, "weights"),
        ({"tau": 0.0}, "tau"),
        ({"aggregate": "median"}, "aggregate"),
        ({"q": 1.5}, "q"),
        ({"topk": 0}, "topk"),
        ({"distance": "cosine"}, "distance"),
        ({"hausdorff_outer": "min"}, "hausdorff_outer"),
        ({"method": "dbscan"}, "method"),
        ({"method": "kmeans", "distance": "hausdorff-max-min"}, "distance"),
        ({"k_max": 1}, "k_max"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"seed": -1}, "seed"),
        ({"reference_size": 0}, "reference_size"),
        ({"new_type_threshold": 0}, "new_type_threshold"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str, data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match=match):
        AnomalyClusterer(**kwargs).fit(bags)  # __init__ stores, fit validates (scikit-learn's convention)


def test_bad_fit_input(data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match="k=20"):
        AnomalyClusterer(20).fit(bags)
    with pytest.raises(ValueError, match="bags"):
        AnomalyClusterer(1).fit(bags[:1])
    with pytest.raises(ValueError, match="bags"):
        AnomalyClusterer(2).fit(bags * 2)  # not unit norm
    with pytest.raises(ValueError, match="topk"):
        AnomalyClusterer(2, weights="topk", topk=M + 1).fit(bags)


def test_k_one_and_k_n(data) -> None:
    bags, _ = data
    one = AnomalyClusterer(1).fit(bags)
    assert (one.labels_ == 0).all() and one.centers_.shape == (1, D)
    every = AnomalyClusterer(len(bags)).fit(bags)
    assert sorted(every.labels_) == list(range(len(bags)))
    np.testing.assert_allclose(every.center_distances_, 0.0, atol=1e-12)


def test_tiny_inputs_choose_one_cluster() -> None:
    bags, _ = defect_bags(np.random.default_rng(0), (2, 1))
    model = AnomalyClusterer().fit(bags)
    assert (model.k_, model.k_choice_.method) == (1, "too-few-images")


def test_n_threads_caps_the_blas_and_does_not_change_results(monkeypatch) -> None:
    from threadpoolctl import threadpool_limits

    from conftest import blas_threads

    import anomclust_lite.estimator.fitting as clusterer_module

    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    rng = np.random.default_rng(4)
    bags = normalize_patches(rng.normal(size=(12, 16, 8)) + np.repeat(np.eye(8)[:3], 4, 0)[:, None] * 3)
    seen = []
    real = clusterer_module.euclidean_distances

    def spy(*args, **kwargs):  # runs inside fit, outside the kernel
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(clusterer_module, "euclidean_distances", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        capped = AnomalyClusterer(3, n_threads=1).fit(bags)
        assert seen == [[1] * len(before)]
        assert blas_threads() == before
        free = AnomalyClusterer(3).fit(bags)
        assert seen[-1] == before
    np.testing.assert_array_equal(capped.labels_, free.labels_)
    np.testing.assert_array_equal(capped.distances_, free.distances_)
    assert "n_threads" not in capped.get_params()  # a setting of the machine: not saved
    np.testing.assert_array_equal(capped.assign(bags).labels, free.assign(bags).labels)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_n_threads_is_validated(bad, data) -> None:
    bags, _ = data
    with pytest.raises(ValueError, match="n_threads"):
        AnomalyClusterer(3, n_threads=bad).fit(bags)


# ---------------------------------------------------------------- scikit-learn conventions


def test_init_stores_parameters_as_given_and_fit_validates(data) -> None:
    bags, _ = data
    model = AnomalyClusterer(0, weights="soft", memory_mb=-1)  # nothing checked yet
    assert (model.k, model.weights, model.memory_mb) == (0, "soft", -1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.fit(bags)
    with pytest.raises(ValueError, match="weights"):
        model.set_params(k=3).validate_params()


def test_get_params_and_set_params_follow_the_signature(data) -> None:
    import inspect

    bags, _ = data
    names = [n for n in inspect.signature(AnomalyClusterer.__init__).parameters if n != "self"]
    model = AnomalyClusterer(3, tau=0.05, n_threads=2)
    params = model.get_params()
    assert list(params) == [n for n in names if n != "n_threads"]  # n_threads: a machine setting, never saved
    assert params["k"] == 3 and params["tau"] == 0.05
    assert AnomalyClusterer(**params).get_params() == params
    assert model.set_params(k=2, n_threads=1) is model and (model.k, model.n_threads) == (2, 1)
    with pytest.raises(ValueError, match="'kk' is not a parameter of AnomalyClusterer"):
        model.set_params(kk=2)
    model.fit(bags)
    model.set_params(memory_mb=0)  # stored as given; the next use validates it
    with pytest.raises(ValueError, match="memory_mb"):
        model.assign(bags)


def test_repr_shows_the_parameters_that_differ_from_their_defaults() -> None:
    assert repr(AnomalyClusterer()) == "AnomalyClusterer()"
    assert repr(AnomalyClusterer(3, tau=0.1, method="average")) == "AnomalyClusterer(k=3, tau=0.1, method='average')"
    assert repr(AnomalyClusterer(n_threads=2)) == "AnomalyClusterer(n_threads=2)"


def test_fit_predict_is_fit_then_labels(data) -> None:
    bags, _ = data
    labels = AnomalyClusterer(3, seed=1).fit_predict(bags)
    np.testing.assert_array_equal(labels, AnomalyClusterer(3, seed=1).fit(bags).labels_)

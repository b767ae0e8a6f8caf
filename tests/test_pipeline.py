"""The one pipeline (bags -> scores -> weights -> WA embeddings) against the steps called by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import AnomalyClusterer
from anomclust_lite.core.defaults import DEFAULT_TAU_SEMI, DEFAULT_TAU_UNSUPERVISED
from anomclust_lite.core.distances import wa_distances, weighted_average
from anomclust_lite.core.pipeline import PIPELINE_WEIGHT_MODES, effective_tau, embed_bags, topk_patches
from anomclust_lite.core.scores import cross_patch_scores, normal_scores, patch_scores
from anomclust_lite.core.weights import mask_weights, soft_weights, topk_weights, uniform_weights

from _reference import naive_normal_scores, naive_patch_scores, naive_wa_distances
from conftest import make_bags


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("aggregate", ["mean", "max", "min", "topk_mean"])
def test_unsupervised_is_eq5_softmax_wa(rng, aggregate):
    bags = make_bags(rng, 7, 10, 4)
    out = embed_bags(bags, aggregate=aggregate, q=0.4, memory_mb=0.01)
    scores = patch_scores(bags, aggregate=aggregate, q=0.4, memory_mb=0.01)
    _same(out.scores, scores)
    _same(out.weights, soft_weights(scores, DEFAULT_TAU_UNSUPERVISED))
    _same(out.embeddings, weighted_average(bags, out.weights))
    np.testing.assert_allclose(out.scores, naive_patch_scores(bags, aggregate, q=0.4), atol=2e-5)
    assert out.mode == "unsupervised" and out.tau == DEFAULT_TAU_UNSUPERVISED and out.topk is None


def test_reference_subsample_is_eq7(rng):
    bags = make_bags(rng, 8, 6, 3)
    ref = np.array([5, 0, 2])
    out = embed_bags(bags, reference=ref, tau=0.1)
    _same(out.scores, patch_scores(bags, reference=ref))
    np.testing.assert_allclose(out.scores, naive_patch_scores(bags, reference=ref), atol=2e-5)
    _same(out.weights, soft_weights(out.scores, 0.1))


def test_semi_is_eq6_against_normal_bags(rng):
    bags, normals = make_bags(rng, 5, 9, 4), make_bags(rng, 3, 9, 4)
    out = embed_bags(bags, weights="semi", normal_bags=normals)
    _same(out.scores, normal_scores(bags, normals))
    np.testing.assert_allclose(out.scores, naive_normal_scores(bags, normals), atol=2e-5)
    _same(out.weights, soft_weights(out.scores, DEFAULT_TAU_SEMI))
    assert out.tau == DEFAULT_TAU_SEMI


def test_reference_bags_score_like_cross_patch_scores(rng):
    bags, ref = make_bags(rng, 3, 8, 4), make_bags(rng, 6, 8, 4)
    out = embed_bags(bags, aggregate="topk_mean", q=0.5, reference_bags=ref)
    _same(out.scores, cross_patch_scores(bags, ref, aggregate="topk_mean", q=0.5))


@pytest.mark.parametrize("tau", [None, 0.05])
def test_topk_baseline_eq8_eq9(rng, tau):
    bags = make_bags(rng, 4, 25, 3)
    out = embed_bags(bags, weights="topk", tau=tau)
    assert out.topk == 2 and out.tau == tau
    _same(out.weights, topk_weights(out.scores, 2, tau))
    assert ((out.weights > 0).sum(axis=1) == 2).all()


def test_uniform_baseline_is_average_pooling_and_still_scores(rng):
    bags = make_bags(rng, 4, 6, 3)
    out = embed_bags(bags, weights="uniform")
    _same(out.weights, uniform_weights(4, 6))
    _same(out.scores, patch_scores(bags))
    np.testing.assert_allclose(out.embeddings, bags.astype(np.float64).mean(axis=1), atol=1e-7)


def test_given_scores_are_used_as_they_are(rng):
    bags = make_bags(rng, 3, 4, 2)
    scores = rng.uniform(0, 2, (3, 4)).astype(np.float32)
    out = embed_bags(bags, weights="semi", scores=scores, tau=0.2)
    _same(out.scores, scores)
    _same(out.weights, soft_weights(scores, 0.2))


def test_mask_baseline(rng):
    bags = make_bags(rng, 2, 4, 3)
    cells = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = embed_bags(bags, weights="mask", masks=cells, scores=np.zeros((2, 4)))
    _same(out.weights, mask_weights(cells))
    np.testing.assert_allclose(out.embeddings[0], bags[0, 0], atol=1e-7)


def test_distances_are_eq3(rng):
    bags = make_bags(rng, 6, 5, 4)
    out = embed_bags(bags)
    _same(out.distances(), wa_distances(bags, out.weights))
    np.testing.assert_allclose(out.distances(), naive_wa_distances(bags, out.weights.astype(np.float64)), atol=1e-6)
    one = embed_bags(bags[:1], scores=np.zeros((1, 5)))
    _same(one.distances(), np.zeros((1, 1)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["unsupervised", "uniform", "topk"]),
       tau=st.sampled_from([None, 0.01, 0.3]))
def test_weights_are_a_distribution_and_embeddings_their_average(seed, mode, tau):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, 4, 7, 3)
    out = embed_bags(bags, weights=mode, tau=tau)
    assert out.weights.dtype == np.float32 and (out.weights >= 0).all()
    np.testing.assert_allclose(out.weights.sum(axis=1), 1.0, atol=1e-5)
    naive = np.einsum("nm,nmd->nd", out.weights.astype(np.float64), bags.astype(np.float64))
    np.testing.assert_allclose(out.embeddings, naive, atol=1e-9)


@pytest.mark.parametrize("weights", ["unsupervised", "semi", "uniform", "topk"])
def test_estimator_fit_gives_the_pipeline_result(rng, weights):
    """The estimator's scores_, weights_ and embeddings_ equal embed_bags bit for bit."""
    bags, normals = make_bags(rng, 9, 12, 5), make_bags(rng, 3, 12, 5)
    normal_bags = None if weights == "unsupervised" else normals
    model = AnomalyClusterer(2, weights=weights, memory_mb=0.05).fit(bags, normal_bags=normal_bags)
    out = embed_bags(bags, weights=weights, normal_bags=normal_bags, memory_mb=0.05)
    _same(model.scores_, out.scores)
    _same(model.weights_, out.weights)
    _same(model.embeddings_, out.embeddings)
    assert model.effective_tau == out.tau


def test_effective_tau_and_topk_patches():
    assert effective_tau("unsupervised", None) == DEFAULT_TAU_UNSUPERVISED
    assert effective_tau("semi", None) == DEFAULT_TAU_SEMI
    assert effective_tau("topk", None) is None and effective_tau("topk", 0.5) == 0.5
    assert [topk_patches(None, m) for m in (1, 9, 10, 784)] == [1, 1, 1, 78]
    assert topk_patches(4, 4) == 4
    assert set(PIPELINE_WEIGHT_MODES) == {"unsupervised", "semi", "uniform", "topk", "mask"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": "semi"}, "needs normal_bags"),
        ({"normal_bags": "N"}, "ignores them; use weights='semi'"),
        ({"weights": "semi", "normal_bags": "N", "reference_bags": "N"}, "not both"),
        ({"weights": "semi", "normal_bags": "N", "scores": np.zeros((3, 4))}, "scores were given"),
        ({"weights": "mask"}, "needs masks"),
        ({"masks": np.ones((3, 4))}, "ignores them; use weights='mask'"),
        ({"weights": "mask", "masks": np.ones((3, 5)), "scores": np.zeros((3, 4))}, "patch cells"),
        ({"weights": "topk", "topk": 5}, "topk=5 exceeds the 4 patches"),
        ({"scores": np.zeros((3, 5))}, r"scores must have shape \(N, M\) = \(3, 4\)"),
        ({"scores": np.full((3, 4), np.nan)}, "NaN"),
        ({"weights": "softmax"}, "weights must be one of"),
    ],
)
def test_bad_combinations_are_refused(rng, kwargs, match):
    bags = make_bags(rng, 3, 4, 2)
    normals = make_bags(rng, 2, 4, 2)
    kwargs = {k: (normals if isinstance(v, str) and v == "N" else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        embed_bags(bags, **kwargs)

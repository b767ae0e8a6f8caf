"""One-pass sweeps: equal to the direct functions for every setting, and validated inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import (
    AGGREGATES,
    HAUSDORFF_INNER,
    HAUSDORFF_OUTER,
    PatchMatches,
    hausdorff_distances,
    hausdorff_from_matches,
    nearest_patch_similarities,
    nested_subsets,
    normal_scores,
    patch_scores,
    scores_from_matches,
    tiered_normal_scores,
    topk_count,
)
from anomclust_lite.core.kernel import pair_bytes

from _reference import naive_patch_scores
from conftest import make_bags


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 9), m=st.integers(1, 6), frac=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_one_pass_equals_the_direct_functions(n, m, frac, seed):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, n, m, 3)
    # The same budget on both sides: the same tasks, so the same similarities. (Across budgets the
    # similarities may differ by float32 rounding, which the square root amplifies near distance 0.)
    budget = pair_bytes(m, 3) * (1 + 8 * frac) / 2**20  # from one pair per task upwards
    matches = nearest_patch_similarities(bags, memory_mb=budget, mean_mean=True)
    assert matches.sims.shape == (n, m, n) and matches.mean_mean.shape == (n, n)
    for agg in AGGREGATES:
        for q in (0.1, 0.5, 1.0):
            want = patch_scores(bags, aggregate=agg, q=q, memory_mb=budget)
            np.testing.assert_allclose(scores_from_matches(matches, aggregate=agg, q=q), want, atol=1e-6)
    for inner in HAUSDORFF_INNER:
        for outer in HAUSDORFF_OUTER:
            want = hausdorff_distances(bags, inner=inner, outer=outer, memory_mb=budget)
            np.testing.assert_allclose(hausdorff_from_matches(matches, inner=inner, outer=outer), want, atol=1e-6)


def test_one_pass_matches_the_naive_scores(rng):
    bags = make_bags(rng, 7, 5, 4)
    matches = nearest_patch_similarities(bags)
    for agg in AGGREGATES:
        np.testing.assert_allclose(scores_from_matches(matches, aggregate=agg), naive_patch_scores(bags, agg),
                                   atol=1e-5)


def test_match_tensor_entries(rng):
    bags = make_bags(rng, 4, 3, 5)
    sims = nearest_patch_similarities(bags).sims
    for i in range(4):
        np.testing.assert_array_equal(sims[i, :, i], 1.0)
        for j in range(4):
            if i != j:
                np.testing.assert_allclose(sims[i, :, j], (bags[i] @ bags[j].T).max(axis=1), atol=1e-6)


def test_mean_mean_needs_the_flag(rng):
    matches = nearest_patch_similarities(make_bags(rng, 3, 2, 2))
    assert matches.mean_mean is None
    with pytest.raises(ValueError, match="mean_mean=True"):
        hausdorff_from_matches(matches, inner="mean-mean")


def test_bad_arguments(rng):
    bags = make_bags(rng, 3, 2, 2)
    matches = nearest_patch_similarities(bags)
    with pytest.raises(ValueError, match="bags"):
        nearest_patch_similarities(bags[:1])
    with pytest.raises(ValueError, match="memory_mb"):
        nearest_patch_similarities(bags, memory_mb=0)
    with pytest.raises(TypeError, match="nearest_patch_similarities"):
        scores_from_matches(bags)
    with pytest.raises(ValueError, match="aggregate"):
        scores_from_matches(matches, aggregate="median")
    with pytest.raises(ValueError, match="q"):
        scores_from_matches(matches, aggregate="topk_mean", q=1.5)
    with pytest.raises(ValueError, match="outer"):
        hausdorff_from_matches(matches, outer="-")


@settings(max_examples=10, deadline=None)
@given(n_normal=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_tiered_normal_scores_equal_normal_scores(n_normal, seed):
    rng = np.random.default_rng(seed)
    bags, normal = make_bags(rng, 4, 5, 3), make_bags(rng, n_normal, 5, 3)
    tiers = nested_subsets(n_normal, (0.3, 0.6, 1.0), seed)
    got = tiered_normal_scores(bags, normal, tiers, n_tiers=3, memory_mb=0.01)
    assert got.shape == (3, 4, 5) and got.dtype == np.float32
    for t in range(3):
        np.testing.assert_allclose(got[t], normal_scores(bags, normal[tiers <= t]), atol=1e-6)


def test_tiered_normal_scores_bad_tiers(rng):
    bags, normal = make_bags(rng, 2, 3, 2), make_bags(rng, 4, 3, 2)
    with pytest.raises(ValueError, match="one tier per normal image"):
        tiered_normal_scores(bags, normal, np.zeros(3, dtype=int), n_tiers=1)
    with pytest.raises(ValueError, match="non-negative integers"):
        tiered_normal_scores(bags, normal, np.array([0, -1, 0, 0]), n_tiers=1)
    with pytest.raises(ValueError, match="non-negative integers"):
        tiered_normal_scores(bags, normal, np.array([0.0, 1.0, 0.0, 0.0]), n_tiers=1)
    with pytest.raises(ValueError, match="no normal image"):
        tiered_normal_scores(bags, normal, np.array([3, 3, 3, 3]), n_tiers=2)
    with pytest.raises(ValueError, match="empty"):
        tiered_normal_scores(bags, normal, np.array([1, 1, 2, 2]), n_tiers=2)  # subset 0 is empty
    with pytest.raises(ValueError, match="n_tiers"):
        tiered_normal_scores(bags, normal, np.zeros(4, dtype=int), n_tiers=0)


def test_nested_subsets():
    tiers = nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=3)
    assert [int((tiers <= t).sum()) for t in range(4)] == [5, 10, 50, 100]
    np.testing.assert_array_equal(tiers, nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=3))
    assert not np.array_equal(tiers, nested_subsets(100, (0.05, 0.1, 0.5, 1.0), seed=4))
    assert int((nested_subsets(100, (0.5,), seed=0) == 1).sum()) == 50  # outside every subset
    assert int((nested_subsets(3, (0.01,), seed=0) == 0).sum()) == 1  # at least one image
    for bad in [(0.5, 0.2), (0.5, 1.5), (0.0,), (0.5, 0.5)]:
        with pytest.raises(ValueError, match="fractions"):
            nested_subsets(10, bad, seed=0)
    with pytest.raises(ValueError, match="n"):
        nested_subsets(0, (0.5,), seed=0)


@settings(max_examples=50, deadline=None)
@given(q=st.floats(1e-6, 1.0), n_others=st.integers(1, 500))
def test_topk_count(q, n_others):
    k = topk_count(q, n_others)
    assert 1 <= k <= n_others
    assert k <= max(1.0, q * n_others + 1e-9)  # never more than the fraction asks for
    assert k > q * n_others - 1  # the floor: at most one image short


def test_topk_count_exact_products_and_bad_input():
    assert topk_count(0.1, 30) == 3  # 0.1 * 30 = 2.9999999999999996 in floating point
    assert topk_count(1.0, 7) == 7
    for q in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="q"):
            topk_count(q, 10)
    with pytest.raises(ValueError, match="n_others"):
        topk_count(0.5, 0)


def test_patch_matches_is_a_plain_container():
    pm = PatchMatches(sims=np.ones((2, 1, 2), dtype=np.float32))
    assert pm.mean_mean is None

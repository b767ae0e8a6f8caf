"""Patch scores (Eq. 5-7) against naive loops, and their invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import cross_patch_scores, normal_scores, patch_scores
from anomclust_lite.core.kernel import block_bytes

from _reference import naive_normal_scores, naive_patch_scores
from conftest import make_bags

AGGS = ["mean", "max", "min", "topk_mean"]


@pytest.mark.parametrize("aggregate", AGGS)
def test_patch_scores_match_naive(rng, aggregate):
    bags = make_bags(rng, 9, 12, 6)
    got = patch_scores(bags, aggregate=aggregate, q=0.3)
    want = naive_patch_scores(bags, aggregate, q=0.3)
    assert got.dtype == np.float32 and got.shape == (9, 12)
    np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("aggregate", AGGS)
def test_reference_subsample_matches_naive(rng, aggregate):
    bags = make_bags(rng, 8, 5, 4)
    ref = np.array([6, 1, 3])
    got = patch_scores(bags, aggregate=aggregate, reference=ref, q=0.5)
    want = naive_patch_scores(bags, aggregate, q=0.5, reference=ref)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_reference_all_equals_default(rng):
    bags = make_bags(rng, 6, 7, 5)
    np.testing.assert_allclose(patch_scores(bags, reference=np.arange(6)), patch_scores(bags), atol=1e-6)


def test_cross_scores_match_naive(rng):
    bags, refs = make_bags(rng, 4, 6, 5), make_bags(rng, 3, 8, 5)
    got = cross_patch_scores(bags, refs, aggregate="mean")
    want = np.stack(
        [np.mean([np.min(np.linalg.norm(b[:, None] - r[None].astype(np.float64), axis=2), axis=1) for r in refs], axis=0) for b in bags]
    )
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_normal_scores_match_naive(rng):
    bags, normals = make_bags(rng, 5, 9, 4), make_bags(rng, 7, 6, 4)
    np.testing.assert_allclose(normal_scores(bags, normals), naive_normal_scores(bags, normals), atol=2e-5)
    # An image in the normal bank has score 0 everywhere.
    assert np.allclose(normal_scores(normals[:2], normals), 0, atol=2e-3)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    m=st.integers(1, 7),
    d=st.integers(1, 5),
    frac=st.floats(0.0, 1.0),
    aggregate=st.sampled_from(AGGS),
    seed=st.integers(0, 2**16),
)
def test_independent_of_memory_budget(n, m, d, frac, aggregate, seed):
    bags = make_bags(np.random.default_rng(seed), n, m, d)
    small = block_bytes(1, 1, m, d) / 2**20
    big = block_bytes(n, n, m, d) / 2**20
    budget = small + frac * (big - small)
    ref_scores = patch_scores(bags, aggregate=aggregate, memory_mb=512)
    np.testing.assert_allclose(patch_scores(bags, aggregate=aggregate, memory_mb=budget), ref_scores, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), aggregate=st.sampled_from(AGGS), seed=st.integers(0, 2**16))
def test_permutation_equivariant(n, aggregate, seed):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, n, 5, 4)
    perm = rng.permutation(n)
    np.testing.assert_allclose(
        patch_scores(bags[perm], aggregate=aggregate, memory_mb=0.001),
        patch_scores(bags, aggregate=aggregate)[perm],
        atol=1e-6,
    )


def test_float16_bags_close(rng):
    bags = make_bags(rng, 6, 10, 8)
    np.testing.assert_allclose(patch_scores(bags.astype(np.float16)), patch_scores(bags), atol=3e-3)


def test_duplicated_images_min_scores_zero(rng):
    # Appendix B: with duplicates, the min-aggregated score is 0 for every patch,
    # so min-aggregated soft weights are uniform.
    base = make_bags(rng, 3, 6, 4)
    bags = np.concatenate([base, base])
    np.testing.assert_allclose(patch_scores(bags, aggregate="min"), 0, atol=2e-3)


def test_memory_budget_too_small(rng):
    bags = make_bags(rng, 3, 50, 8)
    with pytest.raises(ValueError, match="memory_mb"):
        patch_scores(bags, memory_mb=0.001)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"aggregate": "median"}, "aggregate"),
        ({"q": 0}, "q"),
        ({"q": 2.0, "aggregate": "topk_mean"}, "q"),
        ({"memory_mb": -1}, "memory_mb"),
        ({"memory_mb": float("nan")}, "memory_mb"),
        ({"reference": [0]}, "reference"),
        ({"reference": [0, 0, 1]}, "reference"),
        ({"reference": [0, 9]}, "reference"),
        ({"reference": [0.5, 1.0]}, "reference"),
    ],
)
def test_bad_arguments(rng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        patch_scores(make_bags(rng, 4, 3, 2), **kwargs)


def test_bad_bags(rng):
    good = make_bags(rng, 4, 3, 2)
    with pytest.raises(ValueError, match="bags"):
        patch_scores(good[0])  # ndim 2
    with pytest.raises(ValueError, match="bags"):
        patch_scores(good[:1])  # N < 2
    bad = good.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        patch_scores(bad)
    with pytest.raises(ValueError, match="normalise"):
        patch_scores(good * 2)
    with pytest.raises(ValueError, match="normal_bags"):
        normal_scores(good, make_bags(rng, 2, 3, 5))  # mismatched D
    with pytest.raises(ValueError, match="bags"):
        patch_scores(np.zeros((3, 2, 2), dtype=np.int64))


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("func", ["patch_scores", "normal_scores", "hausdorff"])
def test_peak_memory_within_budget(rng, func, threaded, monkeypatch):
    import tracemalloc

    from anomclust_lite import hausdorff_distances

    from anomclust_lite.core import kernel as _kernel

    if threaded:  # the worker-thread path, with as many workers as the budget allows
        monkeypatch.setattr(_kernel, "INLINE_WORK", 0)
        monkeypatch.setattr(_kernel, "available_cpus", lambda: 8)
        _kernel._blas_controller()  # the one-off import and scan of threadpoolctl is not working memory
    n, m, d = 24, 64, 32
    bags = make_bags(rng, n, m, d)
    budget_mb = 4 * block_bytes(1, 1, m, d) / 2**20  # forces many blocks
    calls = {
        "patch_scores": lambda: patch_scores(bags, memory_mb=budget_mb),
        "normal_scores": lambda: normal_scores(bags, bags, memory_mb=budget_mb),
        "hausdorff": lambda: hausdorff_distances(bags, memory_mb=budget_mb),
    }
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        calls[func]()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    o_nm = 4 * n * m * 8 + 2 * n * n * 8  # accumulators and results: O(N*M) (+ N^2 for distances)
    assert peak <= budget_mb * 2**20 + o_nm, (peak, budget_mb * 2**20)

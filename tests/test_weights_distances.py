"""Instance weights, WA distances and Hausdorff distances: oracles and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from anomclust_lite import (
    hausdorff_distances,
    mask_weights,
    normalize_patches,
    patch_scores,
    soft_weights,
    topk_weights,
    uniform_weights,
    wa_distances,
    weighted_average,
)
from anomclust_lite.core.distances import squared_distances_to
from anomclust_lite.core.kernel import block_bytes
from anomclust_lite.core.weights import MIN_RELATIVE_TAU, check_tau, describe_tau, temperatures
from anomclust_lite.datasets import mask_cells

from _reference import naive_hausdorff, naive_wa_distances
from conftest import make_bags

finite_scores = st.integers(0, 2**16).map(lambda s: np.random.default_rng(s).uniform(0, 2, size=(3, 7)))


# --- weights -----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(scores=finite_scores, tau=st.floats(1e-4, 1e6))
def test_soft_weights_rows_sum_to_one(scores, tau):
    w = soft_weights(scores, tau)
    assert w.dtype == np.float32 and np.isfinite(w).all() and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(scores=finite_scores)
def test_large_tau_gives_uniform(scores):
    np.testing.assert_allclose(soft_weights(scores, 1e7), uniform_weights(3, 7), rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(scores=finite_scores)
def test_small_tau_gives_argmax(scores):
    tau = 1e-6
    w = soft_weights(scores, tau)
    onehot = np.zeros_like(w)
    onehot[np.arange(3), scores.argmax(axis=1)] = 1
    top2 = np.sort(scores, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 30 * tau  # a near tie (gap ~ tau) rightly shares the weight
    np.testing.assert_allclose(w[clear], onehot[clear], atol=1e-6)


def test_soft_weights_match_formula():
    s = np.array([[0.1, 0.5, 0.2], [1.0, 1.0, 0.0]])
    e = np.exp(s / 0.3)
    np.testing.assert_allclose(soft_weights(s, 0.3), e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    # Ties at the maximum share the weight.
    np.testing.assert_allclose(soft_weights(s, 1e-4)[1], [0.5, 0.5, 0.0], atol=1e-7)


def test_topk_weights():
    s = np.array([[0.1, 0.9, 0.5, 0.2], [3.0, 3.0, 3.0, 1.0]])
    np.testing.assert_allclose(topk_weights(s, 2), [[0, 0.5, 0.5, 0], [0.5, 0.5, 0, 0]])
    w = topk_weights(s, 2, tau=0.1)
    e = np.exp((0.9 - 0.5) / 0.1)
    np.testing.assert_allclose(w[0], [0, e / (1 + e), 1 / (1 + e), 0], rtol=1e-6)
    np.testing.assert_allclose(topk_weights(s, 4), uniform_weights(2, 4))


def test_mask_weights():
    masks = np.zeros((3, 8, 8))
    masks[0, :4, :4] = 1  # top-left cell
    masks[1, :2, :] = 1  # top row, half of each top cell
    grid = (2, 2)
    w = mask_weights(mask_cells(masks, grid))
    np.testing.assert_allclose(w[0], [1, 0, 0, 0])
    np.testing.assert_allclose(w[1], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(w[2], [0.25] * 4)  # empty mask: uniform
    # Sequence of differently sized masks.
    w2 = mask_weights(mask_cells([np.ones((5, 3)), np.zeros((2, 2))], (1, 3)))
    np.testing.assert_allclose(w2, [[1 / 3] * 3] * 2, rtol=1e-6)


# --- relative temperature ("<c>x": c times each image's score std) ------------------------------


@settings(max_examples=40, deadline=None)
@given(scores=finite_scores, factor=st.floats(0.05, 5.0),
       scale=st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
       shift=st.lists(st.floats(-10.0, 10.0), min_size=3, max_size=3))
def test_relative_tau_ignores_each_images_scale_and_offset(scores, factor, scale, shift):
    spec = f"{factor}x"
    moved = scores * np.array(scale)[:, None] + np.array(shift)[:, None]
    np.testing.assert_allclose(soft_weights(moved, spec), soft_weights(scores, spec), atol=2e-6)
    np.testing.assert_allclose(topk_weights(moved, 3, spec), topk_weights(scores, 3, spec), atol=2e-6)


def test_relative_tau_is_factor_times_each_images_std():
    scores = np.array([[0.0, 0.1, 0.5, 0.2], [0.3, 0.3, 0.9, 0.0]])
    taus = temperatures(scores, "0.4x").ravel()
    np.testing.assert_allclose(taus, 0.4 * scores.std(axis=1))
    np.testing.assert_allclose(soft_weights(scores, "0.4x")[1], soft_weights(scores[1:], float(taus[1]))[0], rtol=1e-6)
    # an image whose patches all score the same: uniform weights, never a division by zero
    flat = soft_weights(np.full((1, 5), 0.7), "0.4x")
    np.testing.assert_allclose(flat, 0.2)
    assert temperatures(np.full((1, 5), 0.7), "0.4x")[0, 0] == MIN_RELATIVE_TAU


def test_relative_tau_is_monotone_in_its_factor():
    scores = np.random.default_rng(0).uniform(0, 1, size=(4, 50))
    top = [soft_weights(scores, f"{c}x").max(axis=1) for c in (0.1, 0.4, 1.0, 4.0)]
    assert all((a >= b - 1e-7).all() for a, b in zip(top, top[1:]))  # a larger factor spreads the weight


@pytest.mark.parametrize("good,canonical", [(0.02, 0.02), (3, 3.0), ("0.40x", "0.4x"), (" 1X ", "1x"), ("2.5e-1x", "0.25x")])
def test_check_tau_accepts_numbers_and_factors(good, canonical):
    assert check_tau(good) == canonical
    assert describe_tau(good).startswith(str(canonical) if isinstance(canonical, str) else f"{canonical:g}")


@pytest.mark.parametrize("bad", ["x", "0x", "-0.4x", "0.4", "abc", "nanx", "infx", "0.4xx", 0, -1.0, float("nan"), True, None])
def test_check_tau_refuses_with_the_forms_it_takes(bad):
    with pytest.raises(ValueError, match="tau"):
        check_tau(bad)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: soft_weights(np.ones((2, 3)), 0), "tau"),
        (lambda: soft_weights(np.ones((2, 3)), -1.0), "tau"),
        (lambda: soft_weights(np.ones((2, 3)), float("inf")), "tau"),
        (lambda: soft_weights(np.ones(3), 1.0), "scores"),
        (lambda: soft_weights(np.array([[np.nan, 1.0]]), 1.0), "scores"),
        (lambda: topk_weights(np.ones((2, 3)), 0), "k"),
        (lambda: topk_weights(np.ones((2, 3)), 4), "k"),
        (lambda: topk_weights(np.ones((2, 3)), 2, tau=0.0), "tau"),
        (lambda: uniform_weights(0, 3), "n"),
        (lambda: mask_cells(np.ones((2, 2)), (2, 2)), "masks"),
        (lambda: mask_cells(np.ones((1, 2, 2)), (0, 2)), "grid"),
        (lambda: mask_weights(np.ones(3)), "masks"),
        (lambda: mask_weights(-np.ones((1, 2))), "masks"),
    ],
)
def test_weight_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- WA distances ------------------------------------------------------------------------------


def test_wa_distances_match_naive(rng):
    bags = make_bags(rng, 6, 9, 5)
    w = soft_weights(rng.uniform(0, 1, (6, 9)), 0.2)
    got = wa_distances(bags, w)
    np.testing.assert_allclose(got, naive_wa_distances(bags, w.astype(np.float64)), atol=1e-6)
    assert np.all(np.diag(got) == 0) and np.allclose(got, got.T)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_uniform_wa_is_mean_embedding_distance(n, m, d, seed):
    bags = make_bags(np.random.default_rng(seed), n, m, d)
    mean = bags.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(wa_distances(bags, uniform_weights(n, m)), cdist(mean, mean), atol=1e-6)


def test_one_hot_max_weights_recover_directed_hausdorff(rng):
    # Eq. 4: with aggregate="max" the top score of image i is max_m max_j min_n ||z_im - z_jn||,
    # and a one-hot alpha (tau -> 0) picks exactly that patch as i's WA embedding.
    bags = make_bags(rng, 5, 12, 4)
    scores = patch_scores(bags, aggregate="max")
    emb = weighted_average(bags, soft_weights(scores, 1e-6))
    d = cdist
    for i in range(5):
        directed = [d(bags[i], bags[j]).min(axis=1).max() for j in range(5) if j != i]
        assert scores[i].max() == pytest.approx(max(directed), abs=1e-5)
        j_far = [j for j in range(5) if j != i][int(np.argmax(directed))]
        assert d(emb[i : i + 1], bags[j_far]).min() == pytest.approx(max(directed), abs=1e-5)


def test_duplicates_give_uniform_min_weights(rng):
    base = make_bags(rng, 3, 6, 4)
    bags = np.concatenate([base, base, base])
    w = soft_weights(patch_scores(bags, aggregate="min"), tau=1.0)
    np.testing.assert_allclose(w, uniform_weights(9, 6), rtol=3e-3)


def test_wa_bad_weights(rng):
    bags = make_bags(rng, 3, 4, 2)
    with pytest.raises(ValueError, match="weights"):
        wa_distances(bags, np.ones((3, 4)))  # rows sum to 4
    with pytest.raises(ValueError, match="weights"):
        wa_distances(bags, uniform_weights(3, 5))
    with pytest.raises(ValueError, match="weights"):
        wa_distances(bags, -uniform_weights(3, 4))


# --- Hausdorff ---------------------------------------------------------------------------------

VARIANTS = [(i, o) for i in ("max-min", "mean-min") for o in ("max", "mean")] + [("min-min", "max"), ("mean-mean", "max")]


@pytest.mark.parametrize("inner, outer", VARIANTS)
def test_hausdorff_matches_naive(rng, inner, outer):
    bags = make_bags(rng, 7, 8, 5)
    got = hausdorff_distances(bags, inner=inner, outer=outer)
    np.testing.assert_allclose(got, naive_hausdorff(bags, inner, outer), atol=2e-5)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 7),
    variant=st.sampled_from(VARIANTS),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_hausdorff_independent_of_budget_and_order(n, variant, frac, seed):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, n, 4, 3)
    small, big = block_bytes(1, 1, 4, 3) / 2**20, block_bytes(n, n, 4, 3) / 2**20
    ref = hausdorff_distances(bags, inner=variant[0], outer=variant[1])
    got = hausdorff_distances(bags, inner=variant[0], outer=variant[1], memory_mb=small + frac * (big - small))
    np.testing.assert_allclose(got, ref, atol=1e-6)
    perm = rng.permutation(n)
    permuted = hausdorff_distances(bags[perm], inner=variant[0], outer=variant[1])
    np.testing.assert_allclose(permuted, ref[np.ix_(perm, perm)], atol=1e-6)


def test_max_hausdorff_symmetric_and_zero_on_identical(rng):
    base = make_bags(rng, 3, 6, 4)
    bags = np.concatenate([base, base[:1]])
    d = hausdorff_distances(bags)
    assert np.allclose(d, d.T)
    assert d[0, 3] < 2e-3 and np.all(np.diag(d) == 0)


def test_hausdorff_bad_arguments(rng):
    bags = make_bags(rng, 3, 4, 2)
    with pytest.raises(ValueError, match="inner"):
        hausdorff_distances(bags, inner="max-max")
    with pytest.raises(ValueError, match="outer"):
        hausdorff_distances(bags, outer="min")


def test_normalize_patches():
    x = np.array([[[3.0, 4.0], [0.0, 2.0]]])
    np.testing.assert_allclose(normalize_patches(x), [[[0.6, 0.8], [0.0, 1.0]]], rtol=1e-6)
    with pytest.raises(ValueError, match="zero norm"):
        normalize_patches(np.zeros((1, 1, 2)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), m=st.integers(1, 6), d=st.integers(1, 40), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 1e4]))
def test_normalize_patches_float32_is_the_float64_division_rounded_once(n, m, d, seed, scale):
    """float32 bags are divided in float64 and rounded once, bit for bit, with no float64 copy of the batch."""
    x = (np.random.default_rng(seed).normal(size=(n, m, d)) * scale).astype(np.float32)
    x64 = x.astype(np.float64)
    reference = (x64 / np.sqrt((x64 * x64).sum(-1, keepdims=True))).astype(np.float32)
    got = normalize_patches(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference, rtol=2e-7, atol=0)  # norms summed in another order at most
    np.testing.assert_allclose(normalize_patches(x64), got, rtol=2e-7, atol=0)  # the same for float64 input


def test_normalize_patches_float32_checks_like_float64():
    with pytest.raises(ValueError, match="bags must be a 3-D array"):
        normalize_patches(np.ones((2, 3), dtype=np.float32))
    bad = np.ones((1, 2, 3), dtype=np.float32)
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="bags contains NaN or inf"):
        normalize_patches(bad)
    with pytest.raises(ValueError, match="patch 1 of image 0 has \\(near\\) zero norm"):
        normalize_patches(np.array([[[1.0, 0.0], [0.0, 0.0]]], dtype=np.float32))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(1, 5), d=st.integers(1, 6), seed=st.integers(0, 2**16),
       block=st.sampled_from([1, 7, 2**22]))
def test_squared_distances_to_matches_cdist_whatever_the_block(n, k, d, seed, block):
    import anomclust_lite.core.distances as distances

    rng = np.random.default_rng(seed)
    x, c = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(k, d))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distances, "_BLOCK_ELEMENTS", block)
        got = squared_distances_to(x, c)
    assert got.shape == (n, k) and got.dtype == np.float64
    np.testing.assert_allclose(got, cdist(x.astype(np.float64), c, "sqeuclidean"), rtol=1e-12, atol=1e-12)
    if n:  # the same bits in any block, and as the broadcast it replaced
        np.testing.assert_array_equal(got, ((x[:, None, :] - c[None]) ** 2).sum(axis=2))

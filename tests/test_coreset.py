"""The compact normal bank (greedy k-centre coreset): properties against naive references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite import normal_scores
from anomclust_lite.core.coreset import (
    MIN_CORESET_PATCHES, compact_bank, coreset_indices, coreset_size, kcenter_greedy,
)

from conftest import make_bags


def naive_kcenter(points: np.ndarray, size: int, start: int) -> list:
    """Textbook farthest-point-first, float64, distances recomputed from scratch at every step."""
    picks = [start]
    while len(picks) < size:
        d = np.sqrt(((points[:, None, :] - points[picks][None, :, :]) ** 2).sum(axis=2)).min(axis=1)
        d[picks] = -1.0
        picks.append(int(np.argmax(d)))
    return picks


def covering_radius(points: np.ndarray, idx: np.ndarray) -> float:
    """Largest distance of a point to its nearest chosen point."""
    d = ((points[:, None, :] - points[idx][None, :, :]) ** 2).sum(axis=2)
    return float(np.sqrt(d.min(axis=1)).max())


points_strategy = st.tuples(st.integers(2, 40), st.integers(1, 5), st.integers(0, 2**31 - 1)).map(
    lambda t: np.random.default_rng(t[2]).normal(size=(t[0], t[1])).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(points_strategy, st.data())
def test_kcenter_greedy_matches_naive_farthest_point(points, data):
    size = data.draw(st.integers(1, points.shape[0]))
    start = data.draw(st.integers(0, points.shape[0] - 1))
    got = kcenter_greedy(points, size, start=start)
    want = naive_kcenter(points.astype(np.float64), size, start)
    assert got[0] == start and len(set(got.tolist())) == size
    # Ties in float32 may pick another point at the same distance: compare the distances.
    gd = [covering_radius(points.astype(np.float64), got[:i]) for i in range(1, size + 1)]
    wd = [covering_radius(points.astype(np.float64), np.array(want[:i])) for i in range(1, size + 1)]
    np.testing.assert_allclose(gd, wd, rtol=1e-4, atol=1e-5)


def test_kcenter_picks_distinct_among_duplicates():
    pts = np.zeros((6, 3), dtype=np.float32)
    pts[3:] = 1.0
    got = kcenter_greedy(pts, 6)
    assert sorted(got.tolist()) == list(range(6))


@settings(max_examples=30, deadline=None)
@given(st.integers(30, 400), st.integers(2, 16), st.integers(0, 2**31 - 1), st.integers(8, 64))
def test_coreset_radius_non_increasing_in_size(n, d, seed, chunk):
    pts = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    previous, radius = np.array([], dtype=np.int64), np.inf
    for size in sorted({1, n // 20 + 1, n // 7 + 1, n // 3 + 1, n - 1}):
        idx = coreset_indices(pts, size, seed=seed % 97, projection_dim=4, chunk_patches=chunk, n_threads=2)
        assert idx.size == np.unique(idx).size and idx.size >= size and (np.diff(idx) > 0).all()
        assert np.isin(previous, idx).all()  # a larger coreset contains every smaller one
        r = covering_radius(pts, idx)
        assert r <= radius + 1e-6
        previous, radius = idx, r


def test_coreset_exact_when_size_covers_bank(rng):
    pts = rng.normal(size=(50, 6)).astype(np.float32)
    assert coreset_indices(pts, 50).tolist() == list(range(50))
    assert coreset_indices(pts, 80).tolist() == list(range(50))
    normals = make_bags(rng, 4, 9, 6)
    assert compact_bank(normals, 1.0) is normals or np.array_equal(compact_bank(normals, 1.0), normals)
    assert np.array_equal(compact_bank(normals, 36), normals)


def test_coreset_deterministic_by_seed_and_thread_count(rng):
    pts = rng.normal(size=(3000, 32)).astype(np.float32)
    a = coreset_indices(pts, 150, seed=3, chunk_patches=700, n_threads=1)
    assert np.array_equal(a, coreset_indices(pts, 150, seed=3, chunk_patches=700, n_threads=2))
    assert not np.array_equal(a, coreset_indices(pts, 150, seed=4, chunk_patches=700))


def test_coreset_covers_better_than_random(rng):
    # Clustered data: k-centre must hit every cluster, a random sample of the same size often misses some.
    centres = rng.normal(size=(12, 8)) * 10
    pts = (centres[rng.integers(0, 12, 2000)] + rng.normal(scale=0.1, size=(2000, 8))).astype(np.float32)
    idx = coreset_indices(pts, 12, chunk_patches=4096, projection_dim=8)
    assert covering_radius(pts, idx) < 1.0
    assert covering_radius(pts, idx) < covering_radius(pts, rng.choice(2000, 12, replace=False))


def test_compact_bank_scores_bounded_by_exact_plus_radius(rng):
    normals = make_bags(rng, 10, 20, 6)
    bags = make_bags(rng, 3, 20, 6)
    bank = compact_bank(normals, 60, seed=1)
    assert bank.shape == (10 * 20 * 3 // 10 // 20, 20, 6) and bank.dtype == normals.dtype
    kept = bank.reshape(-1, 6)
    flat = normals.reshape(-1, 6)
    assert (kept[:, None, :] == flat[None]).all(axis=2).any(axis=1).all()  # only real normal patches
    exact, approx = normal_scores(bags, normals), normal_scores(bags, bank)
    radius = covering_radius(flat.astype(np.float64), np.unique(
        np.flatnonzero((flat[:, None, :] == kept[None]).all(axis=2).any(axis=1))))
    assert (approx >= exact - 1e-4).all() and (approx <= exact + radius + 1e-4).all()


def test_compact_bank_float16_and_padding(rng):
    normals = make_bags(rng, 3, 7, 5, dtype=np.float16)
    bank = compact_bank(normals, 9)
    assert bank.dtype == np.float16 and bank.shape == (2, 7, 5)
    assert np.unique(bank.reshape(-1, 5), axis=0).shape[0] == 9


def test_fraction_keeps_at_least_the_minimum():
    assert coreset_size(0.01, 10 * MIN_CORESET_PATCHES) == MIN_CORESET_PATCHES
    assert coreset_size(0.01, 100) == 100
    assert coreset_size(0.5, 4 * MIN_CORESET_PATCHES) == 2 * MIN_CORESET_PATCHES
    assert coreset_size(3, 100) == 3  # an explicit count is taken as it is


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, float("nan"), True, "10%", None])
def test_bank_size_refused_with_a_message(bad):
    with pytest.raises(ValueError, match="bank_size"):
        coreset_size(bad, 100)

"""Tests of the automatic choice of K (L-method on the merge-cost graph of a tree or of re-clusterings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from anomclust_lite.clustering.auto_k import (
    L_METHOD_MIN_POINTS,
    KChoice,
    _tree_dispersions,
    choose_k,
    cut_linkage,
    l_method,
    merge_costs,
    silhouette_samples,
    silhouette_score,
    within_cluster_dispersion,
)
from anomclust_lite.clustering.dispatch import cluster, linkage_matrix

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def blobs(rng: np.random.Generator, k: int, per: int, dim: int = 4, spread: float = 0.05) -> np.ndarray:
    centres = rng.normal(size=(k, dim)) * 5.0
    return np.repeat(centres, per, axis=0) + rng.normal(scale=spread, size=(k * per, dim))


def naive_silhouette(d: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.zeros(len(labels))
    for i, li in enumerate(labels):
        own = [j for j in range(len(labels)) if labels[j] == li and j != i]
        if not own:
            continue
        a = np.mean(d[i, own])
        b = min(np.mean(d[i, labels == c]) for c in set(labels.tolist()) if c != li)
        out[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return out


def naive_within_ss(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared Euclidean distances of the points to their cluster means."""
    return float(sum(((x[labels == c] - x[labels == c].mean(axis=0)) ** 2).sum() for c in np.unique(labels)))


def naive_l_method(xs: np.ndarray, ys: np.ndarray, min_points: int = 20) -> int:
    """Salvador and Chan's L-method written out with np.polyfit, cutoffs in x units."""

    def knee(x: np.ndarray, y: np.ndarray) -> int:
        m = len(x)
        best_err, best_x = math.inf, None
        for c in range(2, m - 1):
            err = 0.0
            for part_x, part_y in ((x[:c], y[:c]), (x[c:], y[c:])):
                line = np.polyfit(part_x, part_y, 1)
                err += len(part_x) / m * math.sqrt(np.mean((np.polyval(line, part_x) - part_y) ** 2))
            if err < best_err:
                best_err, best_x = err, int(x[c - 1])
        return best_x

    cutoff = xs[-1]
    current = int(xs[-1]) + 1
    while True:
        last = current
        keep = xs <= cutoff
        current = knee(xs[keep], ys[keep])
        if current >= last:
            return current
        cutoff = max(2 * current, xs[0] + min_points - 1)


# --------------------------------------------------------------------------- silhouette


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 25), k=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_silhouette_matches_sklearn_and_naive(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    d = cdist(x, x)
    k = min(k, n - 1)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every cluster used
    rng.shuffle(labels)
    ours = silhouette_score(d, labels)
    ref = sklearn_metrics.silhouette_score(d, labels, metric="precomputed")
    assert ours == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(silhouette_samples(d, labels), naive_silhouette(d, labels), atol=1e-12)


def test_silhouette_singleton_is_zero_and_labels_any_values() -> None:
    x = np.array([0.0, 0.1, 0.2, 5.0])[:, None]
    d = cdist(x, x)
    s = silhouette_samples(d, np.array(["a", "a", "a", "b"]))
    assert s[3] == 0.0
    assert s[:3].min() > 0.9


@pytest.mark.parametrize(
    "labels, match",
    [([0, 0, 0, 0], "labels"), ([0, 1, 2, 3], "labels"), ([0, 1], "labels")],
)
def test_silhouette_bad_labels(labels: list, match: str) -> None:
    d = cdist(np.arange(4.0)[:, None], np.arange(4.0)[:, None])
    with pytest.raises(ValueError, match=match):
        silhouette_score(d, np.array(labels))


def test_silhouette_bad_distances() -> None:
    with pytest.raises(ValueError, match="distances"):
        silhouette_score(np.zeros((3, 4)), np.array([0, 1, 1]))
    d = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="distances"):
        silhouette_score(d, np.array([0, 1, 1]))


# --------------------------------------------------------------------------- linkage cuts


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000), method=st.sampled_from(["ward", "complete", "average"]))
def test_cut_linkage_matches_fcluster(n: int, seed: int, method: str) -> None:
    x = np.random.default_rng(seed).normal(size=(n, 2))
    z = linkage(x, method)
    for k in range(1, n + 1):
        ours = cut_linkage(z, k)
        assert np.unique(ours).size == k
        assert ours[0] == 0
        ref = fcluster(z, k, "maxclust")
        if np.unique(ref).size == k:  # distinct heights: the same partition
            assert sklearn_metrics.adjusted_rand_score(ref, ours) == pytest.approx(1.0)


def test_cut_linkage_with_tied_heights_gives_exactly_k() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])  # single linkage: all merges at height 1
    z = linkage(x, "single")
    for k in (1, 2, 3, 4):
        assert np.unique(cut_linkage(z, k)).size == k


def test_cut_linkage_bad_input() -> None:
    z = linkage(np.arange(4.0)[:, None], "ward")
    with pytest.raises(ValueError, match="k"):
        cut_linkage(z, 5)
    with pytest.raises(ValueError, match="linkage"):
        cut_linkage(z[:, :3], 2)
    bad = z.copy()
    bad[0, 0] = 17
    with pytest.raises(ValueError, match="linkage"):
        cut_linkage(bad, 2)


# --------------------------------------------------------------------------- dispersion and merge costs


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 6), dim=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_within_cluster_dispersion_is_the_within_sum_of_squares(n: int, k: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    labels = rng.integers(0, k, n)
    ours = within_cluster_dispersion(cdist(x, x), labels)
    assert ours == pytest.approx(naive_within_ss(x, labels), rel=1e-9, abs=1e-9)


def test_within_cluster_dispersion_bad_input() -> None:
    d = cdist(np.arange(4.0)[:, None], np.arange(4.0)[:, None])
    with pytest.raises(ValueError, match="labels"):
        within_cluster_dispersion(d, [0, 1])
    with pytest.raises(ValueError, match="distances"):
        within_cluster_dispersion(d[:, :3], [0, 0, 1, 1])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 40), dim=st.integers(1, 6), seed=st.integers(0, 10_000),
       method=st.sampled_from(["ward", "average", "complete"]))
def test_tree_dispersions_match_every_cut(n: int, dim: int, seed: int, method: str) -> None:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    d = cdist(x, x)
    z = linkage(x, method)
    top = max(1, n - 1)
    ours = _tree_dispersions(d * d, z, top)
    assert sorted(ours) == list(range(1, top + 1))
    for k, w in ours.items():
        assert w == pytest.approx(naive_within_ss(x, cut_linkage(z, k)), rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 40), dim=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_merge_costs_of_ward_cuts_are_the_ward_heights(n: int, dim: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    z = linkage(x, "ward")
    w = {k: naive_within_ss(x, cut_linkage(z, k)) for k in range(1, n + 1)}
    costs = merge_costs(w)
    assert sorted(costs) == list(range(2, n + 1))
    heights = z[::-1, 2]  # heights[i]: the merge from i + 2 to i + 1 clusters
    np.testing.assert_allclose([costs[k] for k in range(2, n + 1)], heights, rtol=1e-7, atol=1e-9)


def test_merge_costs_clip_negative_differences_and_check_input() -> None:
    assert merge_costs({1: 5.0, 2: 5.5, 3: 1.0}) == {2: 0.0, 3: 3.0}
    with pytest.raises(ValueError, match="dispersions"):
        merge_costs({1: 5.0, 3: 1.0})
    with pytest.raises(ValueError, match="dispersions"):
        merge_costs({})
    with pytest.raises(ValueError, match="dispersions"):
        merge_costs({1: 5.0, 2: -1.0})


# --------------------------------------------------------------------------- L-method


def test_l_method_finds_the_corner_of_two_lines() -> None:
    xs = range(2, 32)
    y = {x: (20.0 - 3.0 * x if x <= 6 else 2.0 - 0.05 * x) for x in xs}  # steep to x = 6, then flat
    knee, errors = l_method(y)
    assert knee == 6
    assert errors[6] == pytest.approx(0.0, abs=1e-9)
    assert min(errors, key=errors.get) == 6


@settings(max_examples=40, deadline=None)
@given(m=st.integers(4, 60), seed=st.integers(0, 10_000), x0=st.integers(1, 3), min_points=st.integers(4, 25))
def test_l_method_matches_naive(m: int, seed: int, x0: int, min_points: int) -> None:
    rng = np.random.default_rng(seed)
    xs = np.arange(x0, x0 + m)
    ys = np.sort(rng.exponential(size=m))[::-1] * rng.uniform(0.5, 2.0)
    knee, errors = l_method(dict(zip(xs.tolist(), ys.tolist())), min_points=min_points)
    assert knee == naive_l_method(xs, ys, min_points)
    assert knee in errors and errors[knee] == min(errors.values())


def test_l_method_bad_input() -> None:
    with pytest.raises(ValueError, match="costs"):
        l_method({2: 1.0, 3: 0.5, 4: 0.2})  # three points: no two lines of two points
    with pytest.raises(ValueError, match="costs"):
        l_method({2: 1.0, 3: 0.5, 5: 0.2, 6: 0.1})
    with pytest.raises(ValueError, match="costs"):
        l_method({2: 1.0, 3: np.nan, 4: 0.2, 5: 0.1})
    with pytest.raises(ValueError, match="min_points"):
        l_method({2: 1.0, 3: 0.5, 4: 0.2, 5: 0.1}, min_points=3)


# --------------------------------------------------------------------------- choose_k


@pytest.mark.parametrize("k_true", [3, 4, 5, 6, 7, 8])
def test_choose_k_finds_separated_blobs(k_true: int) -> None:
    x = blobs(np.random.default_rng(k_true), k_true, per=6)
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert (choice.k, choice.method) == (k_true, "l-method")
    assert min(choice.scores, key=choice.scores.get) == k_true
    assert min(choice.scores) == 3 and max(choice.scores) <= 15


def test_choose_k_recovers_random_blob_layouts() -> None:
    hits = total = 0
    for k_true in range(3, 11):
        for s in range(10):
            x = blobs(np.random.default_rng(1000 * k_true + s), k_true, per=8, dim=6, spread=0.5)
            hits += choose_k(cdist(x, x), linkage=linkage(x, "ward")).k == k_true
            total += 1
    assert hits / total >= 0.95


def test_choose_k_on_overlapping_blobs_in_more_dimensions() -> None:
    for k_true in (3, 5, 9):
        x = blobs(np.random.default_rng(7), k_true, per=15, dim=8, spread=1.0)
        assert choose_k(cdist(x, x), linkage=linkage(x, "ward")).k == k_true


def test_two_groups_give_three_documented_limit() -> None:
    """A corner needs two points on each side: the L-method never answers K = 2."""
    x = blobs(np.random.default_rng(0), 2, per=10)
    assert choose_k(cdist(x, x), linkage=linkage(x, "ward")).k == 3


def test_choose_k_caps_at_k_max() -> None:
    x = blobs(np.random.default_rng(8), 8, per=6)
    d, z = cdist(x, x), linkage(x, "ward")
    assert choose_k(d, linkage=z).k == 8
    capped = choose_k(d, linkage=z, k_max=5)
    assert capped.k == 5 and max(capped.scores) <= 5


def test_choose_k_with_a_partition_function() -> None:
    x = blobs(np.random.default_rng(0), 4, per=6)
    d = cdist(x, x)
    asked = []

    def partition(k: int) -> np.ndarray:
        asked.append(k)
        return cluster(x, k, method="kmeans", seed=0)

    choice = choose_k(d, partition=partition, k_max=8)
    assert (choice.k, choice.method) == (4, "l-method")
    assert asked == list(range(2, min(len(x) - 1, max(2 * 8, L_METHOD_MIN_POINTS + 1)) + 1))


def test_choose_k_partition_with_fewer_clusters_stops_the_graph() -> None:
    x = blobs(np.random.default_rng(3), 3, per=5)
    d = cdist(x, x)
    z = linkage(x, "ward")
    choice = choose_k(d, partition=lambda k: cut_linkage(z, min(k, 9)))
    assert choice.k == 3 and max(choice.scores) <= 7  # graph x = 2..9
    assert choose_k(d, partition=lambda k: cut_linkage(z, min(k, 3))) == KChoice(1, "too-few-images")


def test_choose_k_hierarchical_and_partition_paths_agree_for_ward() -> None:
    x = blobs(np.random.default_rng(11), 5, per=7, dim=5, spread=1.0)
    d, z = cdist(x, x), linkage(x, "ward")
    tree = choose_k(d, linkage=z)
    parts = choose_k(d, partition=lambda k: cut_linkage(z, k))
    assert (tree.k, tree.method, sorted(tree.scores)) == (parts.k, parts.method, sorted(parts.scores))
    for k in tree.scores:
        assert parts.scores[k] == pytest.approx(tree.scores[k], rel=1e-9)


def test_choose_k_is_deterministic_and_order_free() -> None:
    x = blobs(np.random.default_rng(5), 5, per=8, dim=6, spread=1.0)
    d, z = cdist(x, x), linkage(x, "ward")
    a = choose_k(d, linkage=z)
    assert choose_k(d.copy(), linkage=z.copy()) == a
    perm = np.random.default_rng(1).permutation(len(x))
    b = choose_k(d[np.ix_(perm, perm)], linkage=linkage(x[perm], "ward"))
    assert b.k == a.k
    for k in a.scores:
        assert b.scores[k] == pytest.approx(a.scores[k], rel=1e-9)


def test_choose_k_does_not_depend_on_the_distance_scale() -> None:
    x = blobs(np.random.default_rng(2), 4, per=6)
    d, z = cdist(x, x), linkage(x, "ward")
    a = choose_k(d, linkage=z)
    b = choose_k(1000.0 * d, linkage=linkage(1000.0 * x, "ward"))
    assert a.k == b.k == 4
    for k in a.scores:
        assert b.scores[k] == pytest.approx(1000.0 * a.scores[k], rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_choose_k_too_few_images(n: int) -> None:
    x = np.arange(float(n))[:, None]
    z = linkage(x, "ward") if n > 1 else np.zeros((0, 4))
    choice = choose_k(cdist(x, x), linkage=z)
    assert (choice.k, choice.method, choice.scores) == (1, "too-few-images", {})


def test_choose_k_six_images_is_enough() -> None:
    x = np.array([0.0, 0.1, 5.0, 5.1, 10.0, 10.1])[:, None]
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert (choice.k, choice.method, sorted(choice.scores)) == (3, "l-method", [3])


def test_choose_k_identical_images() -> None:
    x = np.zeros((6, 3))
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert (choice.k, choice.method) == (1, "identical-images")


def test_choose_k_exact_duplicates_in_groups() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 7.0], [6.0, 6.0]]), 4, axis=0)  # W_4 = 0
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert choice.k == 4
    assert all(np.isfinite(v) for v in choice.scores.values())


def test_choose_k_bad_arguments() -> None:
    x = blobs(np.random.default_rng(0), 2, per=4)
    d, z = cdist(x, x), linkage(x, "ward")
    with pytest.raises(ValueError, match="linkage"):
        choose_k(d)
    with pytest.raises(ValueError, match="linkage"):
        choose_k(d, linkage=z, partition=lambda k: np.zeros(8))
    with pytest.raises(ValueError, match="linkage"):
        choose_k(d, linkage=z[:-1])
    with pytest.raises(ValueError, match="k_max"):
        choose_k(d, linkage=z, k_max=1)
    with pytest.raises(ValueError, match="distances"):
        choose_k(d[:, :3], linkage=z)
    with pytest.raises(ValueError, match="labels"):
        choose_k(d, partition=lambda k: np.zeros(5))


def test_kchoice_round_trips_through_json() -> None:
    choice = KChoice(4, "l-method", {3: 0.1, 4: 0.05})
    again = KChoice.from_dict(json.loads(json.dumps(choice.to_dict())))
    assert again == choice


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_bottle_unsupervised_is_within_one_of_the_true_k(shared_dir: Path, shared_model: Path, tmp_path: Path) -> None:
    """MVTec bottle (4 types), int8 ResNet-18, unsupervised WA embeddings at tau 0.03, Ward: the L-method picks 3.

    tau 0.03 is the value this check was set up at (the default until issue 15). At the new default
    0.02, chosen for the ResNet-50 v2 backbone, the L-method picks 6 here (and 3 with the ResNet-50 v2
    reference build): automatic K on one small set is sensitive to tau (BENCHMARKS.md, issue 15).
    """
    from anomclust_lite import Extractor, patch_scores, soft_weights, wa_distances
    from anomclust_lite.datasets import mvtec_category

    root = shared_dir / "data" / "mvtec" / "bottle"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    data = mvtec_category(root)
    bags = Extractor(shared_model, output="relu_43", cache_dir=tmp_path / "cache").extract(data.paths)
    d = wa_distances(bags, soft_weights(patch_scores(bags), 0.03))
    choice = choose_k(d, linkage=linkage_matrix(d, method="ward", metric="precomputed"))
    assert data.k == 4
    assert abs(choice.k - data.k) <= 1

"""Tests for anomclust_lite.clustering.dispatch (and its private algorithm modules)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist
from scipy.stats import multivariate_normal
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from anomclust_lite.clustering.gmm import component_log_densities, gaussian_mixture
from anomclust_lite.clustering.kmedoids import pam
from anomclust_lite.clustering.spectral import gaussian_affinity
from anomclust_lite.clustering.auto_k import cut_linkage
from anomclust_lite.clustering.dispatch import (
    HIERARCHICAL_METHODS,
    METHODS,
    METRICS,
    ClusteringWarning,
    cluster,
    linkage_matrix,
    mds_embedding,
)

RANDOMISED_METHODS = ("kmeans", "gmm", "spectral")


# --------------------------------------------------------------------------- helpers


def canonical(labels) -> np.ndarray:
    """Naive relabelling by first appearance: equal outputs <=> equal partitions."""
    mapping: dict = {}
    values = np.asarray(labels).tolist()
    return np.array([mapping.setdefault(v, len(mapping)) for v in values], dtype=np.int64)


def same_partition(a, b) -> bool:
    return np.array_equal(canonical(a), canonical(b))


def as_input(x: np.ndarray, metric: str) -> np.ndarray:
    return cdist(x, x) if metric == "precomputed" else x


def agglomerative(k: int, method: str, precomputed: bool) -> AgglomerativeClustering:
    """sklearn reference; ``metric`` replaced ``affinity`` in scikit-learn 1.2."""
    extra = {"metric": "precomputed"} if precomputed else {}
    try:
        return AgglomerativeClustering(n_clusters=k, linkage=method, **extra)
    except TypeError:  # scikit-learn < 1.2
        affinity = extra.get("metric", "euclidean")
        return AgglomerativeClustering(n_clusters=k, linkage=method, affinity=affinity)


@pytest.fixture(scope="module")
def blobs() -> "tuple[np.ndarray, np.ndarray]":
    """Four well-separated Gaussian blobs of unequal size in 3-D, shuffled."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    truth = np.repeat(np.arange(4), [15, 12, 10, 13])
    perm = rng.permutation(truth.size)
    truth = truth[perm]
    return centers[truth] + rng.normal(scale=0.5, size=(truth.size, 3)), truth


@pytest.fixture(scope="module")
def tie_free() -> np.ndarray:
    """Unstructured Gaussian data: all pairwise distances and merge heights distinct."""
    return np.random.default_rng(1).normal(size=(40, 5))


# --------------------------------------------------------------------------- recovery / format


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("method", METHODS)
def test_recovers_separated_blobs(blobs, method, metric):
    x, truth = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClusteringWarning)
        labels = cluster(as_input(x, metric), 4, method=method, metric=metric, seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels.dtype == np.int64 and labels.shape == truth.shape
    np.testing.assert_array_equal(labels, canonical(labels))  # 0..k-1 by first appearance
    assert set(labels.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [2, 3, 5, 7])
def test_exactly_k_labels_in_first_appearance_order(tie_free, method, k):
    labels = cluster(tie_free, k, method=method, seed=3)
    assert sorted(set(labels.tolist())) == list(range(k))
    np.testing.assert_array_equal(labels, canonical(labels))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("method", METHODS)
def test_k_one_and_k_n(tie_free, method, metric):
    x = as_input(tie_free[:12], metric)
    np.testing.assert_array_equal(cluster(x, 1, method=method, metric=metric), np.zeros(12, dtype=np.int64))
    np.testing.assert_array_equal(cluster(x, 12, method=method, metric=metric), np.arange(12))


# --------------------------------------------------------------------------- hierarchical


@pytest.mark.parametrize("k", [2, 3, 6, 11])
@pytest.mark.parametrize("method", HIERARCHICAL_METHODS)
def test_hierarchical_matches_scipy_and_sklearn(tie_free, method, k):
    ours = cluster(tie_free, k, method=method)
    scipy_ref = fcluster(linkage(tie_free, method=method), k, criterion="maxclust")
    sklearn_ref = agglomerative(k, method, precomputed=False).fit_predict(tie_free)
    assert same_partition(ours, scipy_ref)
    assert same_partition(ours, sklearn_ref)
    ours_pre = cluster(cdist(tie_free, tie_free), k, method=method, metric="precomputed")
    assert same_partition(ours_pre, ours)
    if method != "ward":  # sklearn's ward needs coordinates
        dist = cdist(tie_free, tie_free)
        assert same_partition(ours_pre, agglomerative(k, method, precomputed=True).fit_predict(dist))


@pytest.mark.parametrize("method", HIERARCHICAL_METHODS)
def test_linkage_matrix_matches_scipy(tie_free, method):
    expected = linkage(tie_free, method=method)
    np.testing.assert_allclose(linkage_matrix(tie_free, method=method), expected)
    pre = linkage_matrix(cdist(tie_free, tie_free), method=method, metric="precomputed")
    np.testing.assert_allclose(pre, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", HIERARCHICAL_METHODS)
def test_merge_order_cut_matches_fcluster_without_ties(tie_free, method):
    z = linkage(tie_free, method=method)
    for k in range(1, tie_free.shape[0] + 1):
        assert same_partition(cut_linkage(z, k), fcluster(z, k, criterion="maxclust"))


def naive_merge_cut(z: np.ndarray, k: int) -> np.ndarray:
    """Reference: replay the first N-k merges with explicit member sets."""
    n = z.shape[0] + 1
    members = {i: {i} for i in range(n)}
    for j in range(n - k):
        a, b = int(z[j, 0]), int(z[j, 1])
        members[n + j] = members.pop(a) | members.pop(b)
    labels = np.empty(n, dtype=np.int64)
    for cid, group in members.items():
        labels[list(group)] = cid
    return labels


@pytest.mark.parametrize("method", HIERARCHICAL_METHODS)
def test_tied_heights_still_give_exactly_k(method):
    x = np.arange(8, dtype=np.float64)[:, None]  # every neighbour 1 apart: tied merges
    z = linkage(x, method=method)
    for k in range(2, 8):
        labels = cluster(x, k, method=method)
        assert len(set(labels.tolist())) == k
        assert same_partition(labels, naive_merge_cut(z, k))
    if method == "single":  # all heights tie, so maxclust alone really fails here
        assert np.unique(fcluster(z, 3, criterion="maxclust")).size < 3


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 25),
    d=st.integers(1, 4),
    method=st.sampled_from(HIERARCHICAL_METHODS),
    metric=st.sampled_from(METRICS),
    data=st.data(),
)
def test_hierarchical_labels_are_permutation_equivariant(seed, n, d, method, metric, data):
    k = data.draw(st.integers(1, n), label="k")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    perm = rng.permutation(n)
    labels = cluster(as_input(x, metric), k, method=method, metric=metric)
    labels_perm = cluster(as_input(x[perm], metric), k, method=method, metric=metric)
    np.testing.assert_array_equal(labels_perm, canonical(labels[perm]))


# --------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("k", [3, 4, 6])
def test_kmeans_inertia_matches_sklearn(blobs, k):
    x, _ = blobs
    labels = cluster(x, k, method="kmeans", seed=0)
    ours = sum(((x[labels == c] - x[labels == c].mean(axis=0)) ** 2).sum() for c in range(k))
    reference = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x).inertia_
    if k <= 4:  # easy: both reach the global optimum
        assert abs(ours - reference) <= 1e-6 * reference
    else:  # splitting blobs has several local optima: never worse than sklearn here
        assert ours <= reference * (1 + 1e-6)


def test_kmeans_labels_are_a_lloyd_fixed_point():
    x = np.random.default_rng(5).normal(size=(80, 2))
    k = 5
    labels = cluster(x, k, method="kmeans", seed=1)
    means = np.array([x[labels == c].mean(axis=0) for c in range(k)])
    for i, point in enumerate(x):
        distances = [((point - m) ** 2).sum() for m in means]
        assert labels[i] == int(np.argmin(distances))


# --------------------------------------------------------------------------- GMM


def test_gmm_partition_and_likelihood_match_sklearn(blobs):
    x, _ = blobs
    reference = GaussianMixture(4, covariance_type="full", reg_covar=1e-6, n_init=3, random_state=0).fit(x)
    assert same_partition(cluster(x, 4, method="gmm", seed=0), reference.predict(x))
    ours = gaussian_mixture(x, 4, np.random.default_rng(0))
    assert ours.log_likelihood == pytest.approx(reference.score(x), rel=1e-3)


def test_component_log_densities_match_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    means = rng.normal(size=(2, 3))
    covs = []
    for _ in range(2):
        a = rng.normal(size=(3, 3))
        covs.append(a @ a.T + 0.1 * np.eye(3))
    chol = np.array([np.linalg.cholesky(c) for c in covs])
    expected = np.stack([multivariate_normal(means[j], covs[j]).logpdf(x) for j in range(2)], axis=1)
    np.testing.assert_allclose(component_log_densities(x, means, chol), expected, rtol=1e-10)


def test_gmm_more_dimensions_than_points_is_exact():
    rng = np.random.default_rng(4)
    low = np.concatenate([rng.normal(0, 1, (15, 3)), rng.normal(2.5, 1, (15, 3))])
    q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    high = np.hstack([low, np.zeros((30, 47))]) @ q.T  # D = 50 > N = 30
    res_low = gaussian_mixture(low, 2, np.random.default_rng(9))
    res_high = gaussian_mixture(high, 2, np.random.default_rng(9))
    assert same_partition(res_low.labels, res_high.labels)
    # the 47 extra directions each contribute log N(0 | 0, reg_covar)
    expected = res_low.log_likelihood - 0.5 * 47 * (np.log(2 * np.pi) + np.log(1e-6))
    assert res_high.log_likelihood == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- spectral, k-medoids, MDS


def test_gaussian_affinity_uses_median_nonzero_distance():
    x = np.array([[0.0], [0.0], [1.0], [3.0]])
    dist = cdist(x, x)
    affinity, sigma = gaussian_affinity(dist)
    nonzero = [dist[i, j] for i in range(4) for j in range(i + 1, 4) if dist[i, j] > 0]
    assert sigma == np.median(nonzero)
    for i, j in itertools.product(range(4), repeat=2):
        assert affinity[i, j] == pytest.approx(np.exp(-dist[i, j] ** 2 / (2 * sigma**2)))


def pam_cost(dist: np.ndarray, medoids) -> float:
    return float(dist[:, list(medoids)].min(axis=1).sum())


def test_pam_is_swap_optimal_and_consistent():
    x = np.random.default_rng(6).normal(size=(25, 2))
    dist = cdist(x, x)
    res = pam(dist, 4)
    assert res.cost == pytest.approx(pam_cost(dist, res.medoids))
    np.testing.assert_array_equal(res.labels, np.argmin(dist[:, res.medoids], axis=1))
    for i in range(4):
        for h in set(range(25)) - set(res.medoids.tolist()):
            swapped = res.medoids.copy()
            swapped[i] = h
            assert pam_cost(dist, swapped) >= res.cost - 1e-12


def test_pam_finds_the_global_optimum_on_blobs(blobs):
    x, _ = blobs
    x = x[:20]
    dist = cdist(x, x)
    best = min(pam_cost(dist, m) for m in itertools.combinations(range(20), 3))
    assert pam(dist, 3).cost == pytest.approx(best)


def test_mds_reproduces_euclidean_distances(tie_free):
    dist = cdist(tie_free, tie_free)
    emb = mds_embedding(dist)
    assert emb.shape == (40, 5)  # rank of the centred data
    np.testing.assert_allclose(cdist(emb, emb), dist, atol=1e-9)
    assert mds_embedding(dist, n_components=2).shape == (40, 2)
    np.testing.assert_allclose(mds_embedding(dist, n_components=2), emb[:, :2])


@pytest.mark.parametrize("metric", ["euclidean", "cityblock"])
def test_mds_few_components_of_many_points_match_the_full_decomposition(metric):
    from anomclust_lite.clustering import dispatch

    points = np.random.default_rng(3).normal(size=(dispatch.MDS_PARTIAL_MIN_POINTS + 50, 6)) * [5, 3, 1, 1, 1, 1]
    dist = cdist(points, points, metric)
    fast = mds_embedding(dist, n_components=2)
    full = mds_embedding(dist)[:, :2]  # every eigenpair (the partial path is not taken without n_components)
    np.testing.assert_allclose(np.abs(fast), np.abs(full), atol=1e-8 * np.abs(full).max())
    np.testing.assert_array_equal(fast, mds_embedding(dist, n_components=2))  # deterministic


def test_mds_keeps_the_positive_part_of_a_non_euclidean_matrix():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(12, 3))
    dist = cdist(points, points, "cityblock")
    n = dist.shape[0]
    centring = np.eye(n) - np.ones((n, n)) / n
    gram = -0.5 * centring @ (dist**2) @ centring
    values, vectors = np.linalg.eigh(gram)
    assert values.min() < -1e-6  # really non-Euclidean
    positive = values > 1e-10 * np.abs(values).max()
    emb = mds_embedding(dist)
    assert emb.shape == (n, int(positive.sum()))
    expected_gram = (vectors[:, positive] * values[positive]) @ vectors[:, positive].T
    np.testing.assert_allclose(emb @ emb.T, expected_gram, atol=1e-9)


# --------------------------------------------------------------------------- metrics, seeds, degenerate input


@pytest.mark.parametrize("method", METHODS)
def test_precomputed_matches_euclidean(method):
    x = np.random.default_rng(8).normal(size=(40, 3))
    euclid = cluster(x, 3, method=method, seed=2)
    pre = cluster(cdist(x, x), 3, method=method, metric="precomputed", seed=2)
    assert same_partition(euclid, pre)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_labels(method):
    x = np.random.default_rng(9).normal(size=(60, 4))
    np.random.seed(1)
    first = cluster(x, 5, method=method, seed=11)
    np.random.seed(2)  # global state must not matter
    second = cluster(x, 5, method=method, seed=11)
    from_generator = cluster(x, 5, method=method, seed=np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, from_generator)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_distinct", [1, 2])
def test_duplicate_points_never_crash_or_fail_silently(method, metric, n_distinct):
    x = np.repeat(np.arange(n_distinct, dtype=np.float64)[:, None] * [1.0, 2.0], 10 // n_distinct, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = cluster(as_input(x, metric), 3, method=method, metric=metric, seed=0)
    n_found = len(set(labels.tolist()))
    np.testing.assert_array_equal(labels, canonical(labels))
    assert 1 <= n_found <= 3
    warned = any(issubclass(w.category, ClusteringWarning) for w in caught)
    assert warned == (n_found < 3)
    if method in HIERARCHICAL_METHODS:
        assert n_found == 3
    if method in ("kmeans", "gmm", "kmedoids"):
        # identical points cannot be split by a centre- or medoid-based method
        assert n_found == n_distinct
        assert all(len(set(labels[x[:, 0] == v].tolist())) == 1 for v in np.unique(x[:, 0]))


def test_clustering_warning_is_a_user_warning():
    assert issubclass(ClusteringWarning, UserWarning)
    with pytest.warns(ClusteringWarning, match="k=3"):
        cluster(np.ones((6, 2)), 3, method="kmeans")


# --------------------------------------------------------------------------- bad input

GOOD = np.random.default_rng(10).normal(size=(6, 2))
GOOD_DIST = cdist(GOOD, GOOD)


def _with(matrix, i, j, value):
    out = matrix.copy()
    out[i, j] = value
    return out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": GOOD[:, 0]}, r"^x\b"),
        ({"x": GOOD[None]}, r"^x\b"),
        ({"x": _with(GOOD, 0, 0, np.nan)}, r"^x\b"),
        ({"x": _with(GOOD, 1, 1, np.inf)}, r"^x\b"),
        ({"x": GOOD[:1], "k": 1}, r"^x\b"),
        ({"x": GOOD[:, :0]}, r"^x\b"),
        ({"x": GOOD_DIST[:, :5], "metric": "precomputed"}, r"^x\b.*square"),
        ({"x": _with(GOOD_DIST, 0, 1, 5.0), "metric": "precomputed"}, r"^x\b.*symmetric"),
        ({"x": GOOD_DIST - 0.5 * GOOD_DIST.max(), "metric": "precomputed"}, r"^x\b"),
        ({"x": GOOD_DIST + np.eye(6), "metric": "precomputed"}, r"^x\b.*diagonal"),
        ({"x": _with(GOOD_DIST, 2, 3, np.nan), "metric": "precomputed"}, r"^x\b"),
        ({"k": 0}, r"^k\b"),
        ({"k": 7}, r"^k\b"),
        ({"k": 2.5}, r"^k\b"),
        ({"k": "3"}, r"^k\b"),
        ({"k": True}, r"^k\b"),
        ({"method": "kmeans++"}, r"^method\b"),
        ({"method": "Ward"}, r"^method\b"),
        ({"metric": "cosine"}, r"^metric\b"),
        ({"seed": -1}, r"^seed\b"),
        ({"seed": 1.5}, r"^seed\b"),
        ({"seed": None}, r"^seed\b"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, match):
    args = {"x": GOOD, "k": 2, **kwargs}
    x, k = args.pop("x"), args.pop("k")
    with pytest.raises(ValueError, match=match):
        cluster(x, k, **args)


def test_bad_input_to_linkage_matrix_and_mds():
    with pytest.raises(ValueError, match=r"^method\b"):
        linkage_matrix(GOOD, method="kmeans")
    with pytest.raises(ValueError, match=r"^metric\b"):
        linkage_matrix(GOOD, metric="cityblock")
    with pytest.raises(ValueError, match=r"^x\b"):
        linkage_matrix(GOOD_DIST[:, :3], metric="precomputed")
    with pytest.raises(ValueError, match=r"^dist\b"):
        mds_embedding(GOOD)
    with pytest.raises(ValueError, match=r"^dist\b"):
        mds_embedding(np.zeros((0, 0)))
    with pytest.raises(ValueError, match=r"^n_components\b"):
        mds_embedding(GOOD_DIST, n_components=0)


def test_precomputed_tolerates_rounding_level_asymmetry():
    noisy = GOOD_DIST.astype(np.float32).astype(np.float64)
    noisy[0, 1] *= 1 + 1e-7
    noisy[2, 2] = 1e-9
    labels = cluster(noisy, 2, method="average", metric="precomputed")
    assert same_partition(labels, cluster(GOOD_DIST, 2, method="average", metric="precomputed"))


def naive_renumber(labels, by):
    """Reference: walk the images once, then sort the clusters by (first image) or (-size, first image)."""
    first, size = {}, {}
    for i, v in enumerate(labels):
        first.setdefault(v, i)
        size[v] = size.get(v, 0) + 1
    key = (lambda v: first[v]) if by == "appearance" else (lambda v: (-size[v], first[v]))
    new = {v: r for r, v in enumerate(sorted(first, key=key))}
    return np.array([new[v] for v in labels], dtype=np.int64)


@settings(max_examples=50, deadline=None)
@given(labels=st.lists(st.integers(-3, 5), min_size=1, max_size=30), by=st.sampled_from(["appearance", "size"]))
def test_renumber_labels_matches_naive(labels, by):
    from anomclust_lite.clustering.labels import renumber_labels

    got = renumber_labels(np.array(labels), by=by)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, naive_renumber(labels, by))
    assert same_partition(got, np.array(labels))

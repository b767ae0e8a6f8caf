"""Tests of the automatic choice of K (silhouette on a linkage tree or on re-clusterings)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from anomclust_lite.auto_k import KChoice, choose_k, cut_linkage, silhouette_samples, silhouette_score
from anomclust_lite.clustering import cluster

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


@pytest.mark.parametrize("k_true", [2, 3, 5])
def test_choose_k_finds_separated_blobs(k_true: int) -> None:
    x = blobs(np.random.default_rng(k_true), k_true, per=6)
    d = cdist(x, x)
    choice = choose_k(d, linkage=linkage(x, "ward"))
    assert choice.k == k_true and choice.method == "silhouette"
    assert sorted(choice.scores) == list(range(2, min(15, len(x) - 1) + 1))
    assert max(choice.scores, key=choice.scores.get) == k_true


def test_choose_k_with_a_partition_function() -> None:
    x = blobs(np.random.default_rng(0), 4, per=5)
    d = cdist(x, x)
    choice = choose_k(d, partition=lambda k: cluster(x, k, method="kmeans", seed=0), k_max=8)
    assert choice.k == 4
    assert sorted(choice.scores) == list(range(2, 9))


def test_choose_k_caps_candidates_at_n_minus_1() -> None:
    x = blobs(np.random.default_rng(1), 2, per=3)
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert sorted(choice.scores) == [2, 3, 4, 5]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_choose_k_too_few_images(n: int) -> None:
    x = np.arange(float(n))[:, None]
    z = linkage(x, "ward") if n > 1 else np.zeros((0, 4))
    choice = choose_k(cdist(x, x), linkage=z)
    assert (choice.k, choice.method, choice.scores) == (1, "too-few-images", {})


def test_choose_k_identical_images() -> None:
    x = np.zeros((6, 3))
    choice = choose_k(cdist(x, x), linkage=linkage(x, "ward"))
    assert (choice.k, choice.method) == (1, "identical-images")


def test_choose_k_prefers_smaller_k_on_ties() -> None:
    d = np.ones((5, 5)) - np.eye(5)  # every partition scores the same
    choice = choose_k(d, partition=lambda k: np.arange(5) % k)
    assert choice.k == 2


def test_choose_k_bad_arguments() -> None:
    x = blobs(np.random.default_rng(0), 2, per=3)
    d, z = cdist(x, x), linkage(x, "ward")
    with pytest.raises(ValueError, match="linkage"):
        choose_k(d)
    with pytest.raises(ValueError, match="linkage"):
        choose_k(d, linkage=z, partition=lambda k: np.zeros(6))
    with pytest.raises(ValueError, match="k_max"):
        choose_k(d, linkage=z, k_max=1)
    with pytest.raises(ValueError, match="distances"):
        choose_k(d[:, :3], linkage=z)


def test_kchoice_round_trips_through_json() -> None:
    choice = KChoice(3, "silhouette", {2: 0.1, 3: 0.5})
    again = KChoice.from_dict(json.loads(json.dumps(choice.to_dict())))
    assert again == choice

"""Tests for anomclust_lite.metrics against scikit-learn and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix as sk_contingency

from anomclust_lite.metrics import (
    accuracy,
    ari,
    clustering_report,
    contingency_matrix,
    f1_macro,
    nmi,
    purity,
    purity_auc,
    purity_curve,
    reduction_at_purity,
)

TOL = 1e-10

# --------------------------------------------------------------------------
# Strategies and references
# --------------------------------------------------------------------------


@st.composite
def labelling(draw, n: int, max_k: int = 8):
    """A labelling of n samples: random with k <= max_k labels, one cluster, or all singletons."""
    kinds = ["random", "random", "random", "single"] + (["singletons"] if n <= max_k else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "single":
        codes = [0] * n
    elif kind == "singletons":
        codes = list(range(n))
    else:
        k = draw(st.integers(1, min(n, max_k)))
        codes = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    if draw(st.booleans()):
        return np.array([f"lab{c}" for c in codes])
    return np.array(codes)


@st.composite
def label_pairs(draw, max_n: int = 40, max_k: int = 8):
    """Two labellings of the same length; all singletons only when n <= max_k."""
    n = draw(st.integers(1, max_n))
    return draw(labelling(n, max_k)), draw(labelling(n, max_k))


def reference_purity(y_true, y_pred) -> float:
    table = sk_contingency(y_true, y_pred)
    return table.max(axis=0).sum() / len(y_true)


def reference_accuracy(y_true, y_pred) -> float:
    table = sk_contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-table)
    return table[rows, cols].sum() / len(y_true)


def all_matchings(n_classes: int, n_clusters: int):
    """Every maximal one-to-one matching as a list of (class, cluster) pairs."""
    if n_classes <= n_clusters:
        for clusters in itertools.permutations(range(n_clusters), n_classes):
            yield list(zip(range(n_classes), clusters))
    else:
        for classes in itertools.permutations(range(n_classes), n_clusters):
            yield list(zip(classes, range(n_clusters)))


def brute_force(y_true, y_pred):
    """(best accuracy, best macro-F1 among accuracy-optimal matchings), F1 via sklearn."""
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, c = np.unique(y_pred, return_inverse=True)
    n = len(y_true)
    table = np.zeros((len(classes), len(clusters)), dtype=np.int64)
    np.add.at(table, (t, c), 1)
    matchings = list(all_matchings(len(classes), len(clusters)))
    correct = [sum(int(table[i, j]) for i, j in m) for m in matchings]
    best_correct = max(correct)
    best_f1 = -1.0
    for matching, count in zip(matchings, correct):
        if count < best_correct:
            continue
        # Matched clusters take their class code; unmatched ones a fresh code.
        mapped = np.full(len(clusters), -1, dtype=np.int64)
        for i, j in matching:
            mapped[j] = i
        unmatched = np.flatnonzero(mapped < 0)
        mapped[unmatched] = len(classes) + np.arange(unmatched.size)
        f1 = f1_score(t, mapped[c], labels=np.arange(len(classes)), average="macro", zero_division=0)
        best_f1 = max(best_f1, float(f1))
    return best_correct / n, best_f1


def naive_linkage_curve(y_true, z):
    """Purity after replaying each prefix of merges with an explicit label array."""
    n = len(y_true)
    assign = np.arange(n)
    curve = {n: reference_purity(y_true, assign)}
    for step, (a, b) in enumerate(z[:, :2].astype(int)):
        assign = np.where((assign == a) | (assign == b), n + step, assign)
        k = n - 1 - step
        assert len(np.unique(assign)) == k
        curve[k] = reference_purity(y_true, assign)
    ks = np.array(sorted(curve))
    return ks, np.array([curve[k] for k in ks])


# --------------------------------------------------------------------------
# Single-number metrics vs scikit-learn
# --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(label_pairs())
def test_metrics_match_sklearn(pair):
    y_true, y_pred = pair
    assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=TOL)
    assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=TOL)
    assert purity(y_true, y_pred) == pytest.approx(reference_purity(y_true, y_pred), abs=TOL)
    assert accuracy(y_true, y_pred) == pytest.approx(reference_accuracy(y_true, y_pred), abs=TOL)


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_contingency_matrix_matches_sklearn(pair):
    y_true, y_pred = pair
    table = contingency_matrix(y_true, y_pred)
    assert table.dtype == np.int64
    np.testing.assert_array_equal(table, sk_contingency(y_true, y_pred))


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_report_matches_functions_and_returns_python_floats(pair):
    y_true, y_pred = pair
    report = clustering_report(y_true, y_pred)
    assert list(report) == ["nmi", "ari", "accuracy", "f1_macro", "purity"]
    for name, fn in [("nmi", nmi), ("ari", ari), ("accuracy", accuracy), ("f1_macro", f1_macro), ("purity", purity)]:
        value = fn(y_true, y_pred)
        assert type(value) is float
        assert type(report[name]) is float
        assert report[name] == value
    for name in ["nmi", "accuracy", "f1_macro", "purity"]:
        assert 0.0 <= report[name] <= 1.0
    assert -1.0 <= report["ari"] <= 1.0


@pytest.mark.parametrize("n", [1, 2, 7])
def test_degenerate_labellings(n):
    single = np.zeros(n, dtype=int)
    singletons = np.arange(n)
    # Both one cluster, or both all singletons: perfect agreement.
    for y in (single, singletons):
        assert nmi(y, y[::-1].copy()) == 1.0
        assert ari(y, y[::-1].copy()) == 1.0
        assert accuracy(y, y) == 1.0
        assert f1_macro(y, y) == 1.0
        assert purity(y, y) == 1.0
    # One cluster vs all singletons: no information shared (for n > 1).
    for a, b in [(single, singletons), (singletons, single)]:
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=TOL)
        assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=TOL)
        if n > 1:
            assert nmi(a, b) == 0.0
            assert ari(a, b) == 0.0
    assert purity(single, singletons) == 1.0
    assert purity(singletons, single) == pytest.approx(1.0 / n)
    assert accuracy(single, singletons) == pytest.approx(1.0 / n)


def test_identical_up_to_renaming_is_exactly_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=500)
    renamed = np.array([f"c{(v * 5) % 7}" for v in y])
    assert nmi(y, renamed) == 1.0
    assert ari(y, renamed) == 1.0
    assert accuracy(y, renamed) == 1.0
    assert f1_macro(y, renamed) == 1.0


def test_ari_large_n_has_no_overflow():
    # Pair-count products exceed int64 here (~(N^2/4)^2 > 9.2e18).
    rng = np.random.default_rng(1)
    n = 200_000
    y_true = rng.integers(0, 2, size=n)
    y_pred = np.where(rng.random(n) < 0.9, y_true, 1 - y_true)
    value = ari(y_true, y_pred)
    assert value == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-9)
    assert 0.5 < value < 1.0


def test_unorderable_labels_use_first_appearance_order():
    y_true = np.array([None, None, 3, "x", 3], dtype=object)
    y_pred = [1, 1, 0, 0, 2]
    codes = [0, 0, 1, 2, 1]
    np.testing.assert_array_equal(contingency_matrix(y_true, y_pred), [[0, 2, 0], [1, 0, 1], [1, 0, 0]])
    assert clustering_report(y_true, y_pred) == clustering_report(codes, y_pred)


# --------------------------------------------------------------------------
# Hungarian matching vs brute force
# --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(label_pairs(max_n=12, max_k=5))
def test_accuracy_and_f1_match_brute_force(pair):
    y_true, y_pred = pair
    best_accuracy, best_f1 = brute_force(y_true, y_pred)
    assert accuracy(y_true, y_pred) == pytest.approx(best_accuracy, abs=TOL)
    assert f1_macro(y_true, y_pred) == pytest.approx(best_f1, abs=TOL)


def test_f1_macro_hand_example_more_classes_than_clusters():
    # Classes a(2), b(2), c(1); clusters 5 = {a, a}, 7 = {b, b, c}.
    # a<->5: F1 = 1; b<->7: F1 = 2*2/(2+3) = 0.8; c unmatched: 0.
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = [5, 5, 7, 7, 7]
    assert accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert f1_macro(y_true, y_pred) == pytest.approx((1.0 + 0.8 + 0.0) / 3)


def test_f1_macro_breaks_accuracy_ties_by_f1():
    # Both matchings of class 0 (cluster 0 or 1) give 1 correct sample;
    # cluster 1 is the smaller one, so it has the higher F1 (2/3 vs 1/2).
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 0, 0]
    assert accuracy(y_true, y_pred) == pytest.approx(0.75)
    # 0<->1, 1<->0: F1 = 2*1/(2+1) and 2*2/(2+3); the alternative gives 2*1/(2+3) + 0.
    assert f1_macro(y_true, y_pred) == pytest.approx((2 / 3 + 4 / 5) / 2)


# --------------------------------------------------------------------------
# Invariances
# --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(label_pairs(), st.randoms(use_true_random=False))
def test_invariant_to_renaming_labels(pair, rnd):
    y_true, y_pred = pair

    def rename(y):
        names = sorted(set(y.tolist()))
        shuffled = list(names)
        rnd.shuffle(shuffled)
        mapping = {old: f"new-{shuffled.index(old)}" for old in names}
        return np.array([mapping[v] for v in y.tolist()])

    before = clustering_report(y_true, y_pred)
    after = clustering_report(rename(y_true), rename(y_pred))
    for key, value in before.items():
        assert after[key] == pytest.approx(value, abs=TOL), key
    assert after["accuracy"] == before["accuracy"]
    assert nmi(y_pred, y_true) == pytest.approx(before["nmi"], abs=TOL)
    assert ari(y_pred, y_true) == pytest.approx(before["ari"], abs=TOL)


# --------------------------------------------------------------------------
# Purity curves
# --------------------------------------------------------------------------

METHODS = ["single", "complete", "average", "ward"]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 6), st.sampled_from(METHODS), st.integers(0, 2**32 - 1))
def test_linkage_curve_matches_fcluster_cuts(n, n_classes, method, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))  # continuous: merge heights are tie-free
    y = rng.integers(0, n_classes, size=n)
    z = linkage(pdist(x), method)  # condensed: a raw 2x2 grid may look like a distance matrix
    ks, purities = purity_curve(y, z)
    assert ks.dtype == np.int64 and purities.dtype == np.float64
    np.testing.assert_array_equal(ks, np.arange(1, n + 1))
    for k, p in zip(ks, purities):
        cut = fcluster(z, k, criterion="maxclust")
        assert len(np.unique(cut)) == k
        assert p == pytest.approx(reference_purity(y, cut), abs=TOL)
    assert np.all(np.diff(purities) >= -TOL)
    assert purities[-1] == 1.0
    assert purities[0] == pytest.approx(np.bincount(y).max() / n)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.sampled_from(METHODS), st.integers(0, 2**32 - 1), st.booleans())
def test_linkage_curve_exact_k_with_ties(n, method, seed, string_labels):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, 2)).astype(float)  # grid points: many tied heights
    y = rng.integers(0, 4, size=n)
    if string_labels:
        y = np.array([f"class-{v}" for v in y])
    z = linkage(pdist(x), method)  # condensed: a raw 2x2 grid may look like a distance matrix
    ks, purities = purity_curve(y, z)
    ref_ks, ref_purities = naive_linkage_curve(y, z)
    np.testing.assert_array_equal(ks, ref_ks)
    np.testing.assert_allclose(purities, ref_purities, atol=TOL)


def test_linkage_with_ties_gives_exact_k_where_maxclust_does_not():
    x = np.arange(4, dtype=float)[:, None]  # all single-linkage heights equal 1
    z = linkage(x, "single")
    assert len(np.unique(fcluster(z, 2, criterion="maxclust"))) == 1
    ks, purities = purity_curve([0, 0, 1, 1], z)
    np.testing.assert_array_equal(ks, [1, 2, 3, 4])
    np.testing.assert_allclose(purities, naive_linkage_curve(np.array([0, 0, 1, 1]), z)[1])


def test_linkage_curve_single_sample():
    ks, purities = purity_curve(["a"], np.zeros((0, 4)))
    np.testing.assert_array_equal(ks, [1])
    np.testing.assert_array_equal(purities, [1.0])


def test_curve_from_sequence_and_mapping():
    y = np.array(["a", "a", "b", "b", "b"])
    cuts = [np.arange(5), np.zeros(5, dtype=int), np.array([0, 0, 0, 1, 1])]
    ks, purities = purity_curve(y, cuts)
    np.testing.assert_array_equal(ks, [1, 2, 5])
    np.testing.assert_allclose(purities, [0.6, 0.8, 1.0])
    # Mapping: K from the key; a labelling may use fewer labels than K.
    ks, purities = purity_curve(y, {4: cuts[2], 1: cuts[1]})
    np.testing.assert_array_equal(ks, [1, 4])
    np.testing.assert_allclose(purities, [0.6, 0.8])


def test_curve_bad_inputs():
    y = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, np.zeros((2, 4)))  # wrong linkage shape for N = 4
    z = linkage(np.arange(4, dtype=float)[:, None], "single")
    bad = z.copy()
    bad[1, 0] = bad[0, 0]  # merges a cluster twice
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, bad)
    bad = z.copy()
    bad[0, 1] = 5  # refers to a cluster not formed yet
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, bad)
    bad = z.copy()
    bad[2, 3] = 3  # wrong size column
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, bad)
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, [[0, 0, 1, 1], [1, 1, 0, 0]])  # K = 2 twice
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, {1: [0, 0, 1, 1]})  # 2 labels under key 1
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, {5: [0, 0, 1, 1]})  # K > N
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, [[0, 0, 1]])  # wrong length
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, [])
    with pytest.raises(ValueError, match="clusterings"):
        purity_curve(y, "0011")
    with pytest.raises(ValueError, match="labels_true"):
        purity_curve([], [])


def test_purity_auc_hand_examples():
    # Trapezoids over K: (0.5+0.75)/2 + (0.75+1)/2 + (1+1)/2 = 2.5, range 3.
    assert purity_auc([1, 2, 3, 4], [0.5, 0.75, 1.0, 1.0]) == pytest.approx(2.5 / 3)
    # Uneven spacing: (0.4+0.6)/2*4 + (0.6+1.0)/2*5 = 2 + 4 = 6, range 9.
    assert purity_auc([1, 5, 10], [0.4, 0.6, 1.0]) == pytest.approx(6 / 9)
    assert purity_auc(np.array([3, 7]), [0.2, 0.2]) == pytest.approx(0.2)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_purity_auc_is_mean_over_normalised_axis(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    ks, purities = purity_curve(y, linkage(rng.standard_normal((n, 2)), "average"))
    x = ks / n
    area = sum((x[i + 1] - x[i]) * (purities[i] + purities[i + 1]) / 2 for i in range(n - 1))
    value = purity_auc(ks, purities)
    assert value == pytest.approx(area / (x[-1] - x[0]), abs=TOL)
    assert purities.min() - TOL <= value <= 1.0


def test_reduction_at_purity_hand_examples():
    ks, purities = [1, 2, 3, 4], [0.5, 0.75, 1.0, 1.0]
    assert reduction_at_purity(ks, purities, 0.5, n_samples=4) == pytest.approx(0.75)
    assert reduction_at_purity(ks, purities, 0.75, n_samples=4) == pytest.approx(0.5)
    assert reduction_at_purity(ks, purities, 0.9, n_samples=4) == pytest.approx(0.25)
    assert reduction_at_purity(ks, purities, 1.0, n_samples=4) == pytest.approx(0.25)
    # Partial curve of a 100-sample set; non-monotone: the smallest K reaching p wins.
    assert reduction_at_purity([10, 20, 30], [0.9, 0.8, 0.95], 0.85, n_samples=100) == pytest.approx(0.9)
    # Full linkage curve: K = N always reaches p = 1.
    y = [0, 1, 0, 1, 2]
    ks, purities = purity_curve(y, linkage(np.arange(5, dtype=float)[:, None], "single"))
    assert reduction_at_purity(ks, purities, 1.0, n_samples=5) >= 0.0


def test_curve_summaries_bad_inputs():
    ks, purities = [1, 2, 3], [0.5, 0.8, 1.0]
    for p in (0.0, -0.1, 1.01, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match="p"):
            reduction_at_purity(ks, purities, p, n_samples=3)
    with pytest.raises(ValueError, match="n_samples"):
        reduction_at_purity(ks, purities, 0.9, n_samples=2)
    with pytest.raises(ValueError, match="n_samples"):
        reduction_at_purity(ks, purities, 0.9, n_samples=3.0)
    with pytest.raises(ValueError, match="p=0.9"):
        reduction_at_purity([1, 2], [0.5, 0.8], 0.9, n_samples=10)
    with pytest.raises(TypeError):
        reduction_at_purity(ks, purities, 0.9, 3)  # n_samples is keyword-only
    for fn in (purity_auc, lambda k, p: reduction_at_purity(k, p, 0.5, n_samples=10)):
        with pytest.raises(ValueError, match="ks"):
            fn([1, 3, 2], [0.5, 0.8, 1.0])  # not increasing
        with pytest.raises(ValueError, match="ks"):
            fn([1, 1, 2], [0.5, 0.8, 1.0])  # duplicate
        with pytest.raises(ValueError, match="ks"):
            fn([0, 1, 2], [0.5, 0.8, 1.0])  # K < 1
        with pytest.raises(ValueError, match="ks"):
            fn([1.0, 2.0, 3.0], [0.5, 0.8, 1.0])  # not integers
        with pytest.raises(ValueError, match="ks"):
            fn([[1, 2, 3]], [0.5, 0.8, 1.0])  # 2-D
        with pytest.raises(ValueError, match="purities"):
            fn([1, 2, 3], [0.5, 0.8])  # length
        with pytest.raises(ValueError, match="purities"):
            fn([1, 2, 3], [0.5, 1.8, 1.0])  # out of range
        with pytest.raises(ValueError, match="purities"):
            fn([1, 2, 3], [0.5, float("nan"), 1.0])
    with pytest.raises(ValueError, match="ks"):
        purity_auc([2], [0.5])  # one point has no area
    with pytest.raises(ValueError, match="ks"):
        reduction_at_purity([], [], 0.5, n_samples=3)


# --------------------------------------------------------------------------
# Bad labellings
# --------------------------------------------------------------------------

LABEL_FUNCTIONS = [contingency_matrix, nmi, ari, accuracy, f1_macro, purity, clustering_report]


@pytest.mark.parametrize("fn", LABEL_FUNCTIONS)
def test_bad_labellings_raise_naming_the_argument(fn):
    with pytest.raises(ValueError, match="labels_true"):
        fn([[0, 1], [1, 0]], [0, 1, 1, 0])
    with pytest.raises(ValueError, match="labels_true"):
        fn(3, [3])
    with pytest.raises(ValueError, match="labels_pred"):
        fn([0, 1, 1, 0], [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="labels_pred"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="labels_true"):
        fn([], [])

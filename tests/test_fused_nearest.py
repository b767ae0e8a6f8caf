"""patch_scores_and_nearest: the scores and, from the same pairs, the nearest-patch distances to some images;
and the unsupervised fit taking its novelty calibration from it instead of a second kernel pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import anomclust_lite.estimator.fitting as fitting
from anomclust_lite import AnomalyClusterer, CacheFolder, patch_scores, patch_scores_and_nearest
from anomclust_lite.core.anomaly import image_scores
from anomclust_lite.core.kernel import block_bytes
from anomclust_lite.estimator.reference import seeded_images

from _reference import naive_patch_scores
from conftest import make_bags

AGGS = ["mean", "max", "min", "topk_mean"]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 9), m=st.integers(1, 6), d=st.integers(1, 5), aggregate=st.sampled_from(AGGS),
       eq7=st.booleans(), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_same_as_two_passes_and_naive_at_any_budget(n, m, d, aggregate, eq7, frac, seed):
    rng = np.random.default_rng(seed)
    bags = make_bags(rng, n, m, d)
    ref = np.sort(rng.choice(n, size=int(rng.integers(2, n + 1)), replace=False))
    near = np.sort(rng.choice(ref, size=int(rng.integers(2, ref.size + 1)), replace=False))
    small, big = block_bytes(1, 1, m, d) / 2**20, block_bytes(n, n, m, d) / 2**20
    reference, budget = (ref if eq7 else None), small + frac * (big - small)
    scores, nearest = patch_scores_and_nearest(bags, near, aggregate=aggregate, q=0.4, reference=reference,
                                               memory_mb=budget)
    assert scores.dtype == nearest.dtype == np.float32 and scores.shape == nearest.shape == (n, m)
    # the scores are patch_scores' own at the same budget; the distances agree with a separate pass and naive
    np.testing.assert_array_equal(scores, patch_scores(bags, aggregate=aggregate, q=0.4, reference=reference,
                                                       memory_mb=budget))
    np.testing.assert_allclose(nearest, patch_scores(bags, aggregate="min", reference=near), atol=1e-6)
    np.testing.assert_allclose(nearest, naive_patch_scores(bags, "min", reference=near), atol=2e-5)


def test_bit_identical_when_the_images_are_the_reference(rng):
    bags = make_bags(rng, 12, 9, 6)
    ref = np.array([1, 4, 5, 9, 11])
    _, nearest = patch_scores_and_nearest(bags, ref, reference=ref, memory_mb=0.01)
    np.testing.assert_array_equal(nearest, patch_scores(bags, aggregate="min", reference=ref, memory_mb=0.01))


def test_images_outside_the_reference_are_refused(rng):
    bags = make_bags(rng, 6, 4, 3)
    with pytest.raises(ValueError, match="nearest_to must be images of reference.*1 of its 3"):
        patch_scores_and_nearest(bags, np.array([0, 1, 5]), reference=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="at least 2"):
        patch_scores_and_nearest(bags, np.array([3]))
    with pytest.raises(ValueError, match="duplicate"):
        patch_scores_and_nearest(bags, np.array([3, 3]))


@pytest.mark.parametrize("n, subsample_from", [(30, 500), (30, 10)])  # all pairs; Eq. 7 (reference = novelty's)
def test_the_unsupervised_fit_calibrates_novelty_without_a_second_pass(rng, monkeypatch, n, subsample_from):
    bags = make_bags(rng, n, 16, 8)
    params = dict(weights="unsupervised", reference_size=12, score_reference=12, subsample_from=subsample_from, seed=3)
    calls = []
    separate = fitting.novelty_patch_part
    monkeypatch.setattr(fitting, "novelty_patch_part", lambda *a, **k: calls.append(1) or separate(*a, **k))
    fused = AnomalyClusterer(3, **params).fit(bags)
    assert calls == []  # no second kernel pass
    monkeypatch.setattr(fitting, "_patch_part", lambda params, steps, ref_idx, progress: separate(
        params, steps.arr, ref_idx, progress))  # the calibration as before: its own pass
    apart = AnomalyClusterer(3, **params).fit(bags)
    assert np.array_equal(fused.labels_, apart.labels_)
    a, b = fused._state().novelty, apart._state().novelty
    np.testing.assert_allclose(a.fitted, b.fitted, rtol=1e-6)
    np.testing.assert_allclose(a.thresholds, b.thresholds, rtol=1e-6)
    np.testing.assert_allclose(a.scales, b.scales, rtol=1e-6)
    ref = seeded_images(n, 12, 3)
    np.testing.assert_allclose(a.scales[1], np.median(image_scores(naive_patch_scores(bags, "min", reference=ref))),
                               rtol=1e-4)


def test_a_reference_outside_eq7s_is_calibrated_by_its_own_pass(rng, monkeypatch):
    bags = make_bags(rng, 30, 16, 8)
    calls = []
    separate = fitting.novelty_patch_part
    monkeypatch.setattr(fitting, "novelty_patch_part", lambda *a, **k: calls.append(1) or separate(*a, **k))
    AnomalyClusterer(3, reference_size=12, score_reference=6, subsample_from=10, seed=3).fit(bags)
    assert calls == [1]  # Eq. 7 compares only 6 images with the rest: the novelty reference needs its own pass


def test_scores_from_the_cache_leave_the_calibration_its_own_pass(rng, monkeypatch, tmp_path):
    bags = make_bags(rng, 30, 16, 8)
    calls = []
    separate = fitting.novelty_patch_part
    monkeypatch.setattr(fitting, "novelty_patch_part", lambda *a, **k: calls.append(1) or separate(*a, **k))
    cache = CacheFolder(tmp_path)
    AnomalyClusterer(3, reference_size=12, seed=3).fit(bags, cache=cache)
    assert calls == []
    again = AnomalyClusterer(3, reference_size=10, seed=3).fit(bags, cache=cache)  # scores hit, novelty does not
    assert calls == [1]
    fresh = AnomalyClusterer(3, reference_size=10, seed=3).fit(bags)
    np.testing.assert_allclose(again._state().novelty.thresholds, fresh._state().novelty.thresholds, rtol=1e-6)

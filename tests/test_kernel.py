"""The blocked kernel: task planning, pair coverage, reductions, and the threaded path."""

from __future__ import annotations

import logging
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from anomclust_lite import hausdorff_distances, normal_scores, patch_scores

from anomclust_lite.core import kernel as _kernel
from anomclust_lite.core.kernel import block_bytes, block_reductions, n_tasks, pair_bytes, plan_tasks, sims_to_dists

from _reference import naive_patch_scores
from conftest import blas_threads, make_bags

MIB = 2**20


def naive_block(x: np.ndarray, y: np.ndarray) -> "tuple[np.ndarray, np.ndarray, float]":
    """Row maxima (M,), column maxima (M',) and mean distance between two bags, in float64."""
    s = x.astype(np.float64) @ y.astype(np.float64).T
    return s.max(axis=1), s.max(axis=0), float(np.sqrt(np.maximum(0, 2 - 2 * s)).mean())


def collect(results):
    return [(r.rows.tolist(), r.cols.tolist(), r.row_max, r.col_max, r.mean_dist) for r in results]


@pytest.fixture
def pooled(monkeypatch):
    """Make every problem large enough for the thread pool."""
    monkeypatch.setattr(_kernel, "INLINE_WORK", 0)


# --- planning ------------------------------------------------------------------------------------


def test_plan_refuses_a_budget_below_one_pair() -> None:
    need = pair_bytes(784, 512) / MIB
    with pytest.raises(ValueError, match=r"memory_mb=.*one image pair needs .* MiB; raise memory_mb"):
        plan_tasks(784, 512, need * 0.99, 10)
    assert plan_tasks(784, 512, need, 10, cpus=4) == (1, 1)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 900), d=st.integers(1, 600), n_cols=st.integers(1, 50), cpus=st.integers(1, 8),
       frac=st.floats(0, 1))
def test_plan_fits_the_budget_and_does_not_depend_on_the_cpus(m, d, n_cols, cpus, frac) -> None:
    lo, hi = pair_bytes(m, d), 8 * block_bytes(1, n_cols, m, d)
    memory_mb = (lo + frac * max(0, hi - lo)) / MIB
    b, workers = plan_tasks(m, d, memory_mb, n_cols, cpus=cpus)
    assert 1 <= b <= n_cols and 1 <= workers <= cpus
    assert b <= max(1, _kernel.MAX_TASK_COLS // m)
    assert workers * block_bytes(1, b, m, d) <= memory_mb * MIB
    assert plan_tasks(m, d, memory_mb, n_cols, cpus=1)[0] == b  # same tasks, so the same results
    if b > 1:  # as wide as two tasks in the budget allow
        wider = min(n_cols, _kernel.MAX_TASK_COLS // m, b + 1)
        assert wider == b or 2 * block_bytes(1, wider, m, d) > memory_mb * MIB


def test_default_plan_at_the_benchmark_size() -> None:
    b, workers = plan_tasks(784, 512, 512, 160, cpus=2)
    assert (b, workers) == (4, 2)  # 784 x 3136 Gram buffers, one per worker: about 20 MiB in all


# --- coverage and reductions -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), frac=st.floats(0, 1), workers=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_symmetric_mode_covers_each_unordered_pair_once(n, frac, workers, seed) -> None:
    m, d = 5, 3
    bags = make_bags(np.random.default_rng(seed), n, m, d)
    lo, hi = pair_bytes(m, d), 3 * block_bytes(1, n, m, d)
    budget = (lo + frac * (hi - lo)) / MIB
    pairs = []
    results = list(block_reductions(bags, memory_mb=budget, col_max=True, workers=workers))
    for res in results:
        assert res.rows.size == 1 and res.cols.size >= 1
        assert res.row_max.shape == (1, m, res.cols.size) and res.col_max.shape == (res.cols.size, m, 1)
        pairs += [(int(res.rows[0]), int(c)) for c in res.cols]
    assert sorted(pairs) == list(combinations(range(n), 2))  # row image first, no self-pairs
    b, _ = plan_tasks(m, d, budget, n, cpus=workers)
    assert len(results) == n_tasks(n, n, b, symmetric=True)


def test_reductions_match_a_naive_computation(rng) -> None:
    bags = make_bags(rng, 5, 7, 4)
    other = make_bags(rng, 3, 6, 4)
    for res in block_reductions(bags, memory_mb=1, col_max=True, mean_dist=True):
        i = int(res.rows[0])
        for t, j in enumerate(res.cols):
            rmax, cmax, mean = naive_block(bags[i], bags[j])
            np.testing.assert_allclose(res.row_max[0, :, t], rmax, atol=1e-6)
            np.testing.assert_allclose(res.col_max[t, :, 0], cmax, atol=1e-6)
            assert res.mean_dist[0, t] == pytest.approx(mean, abs=1e-6)
    seen = set()
    for res in block_reductions(bags, other, memory_mb=1, col_index=np.array([2, 0])):
        assert res.col_max is None and res.mean_dist is None
        for t, j in enumerate(res.cols):
            seen.add((int(res.rows[0]), int(j)))
            np.testing.assert_allclose(res.row_max[0, :, t], naive_block(bags[res.rows[0]], other[j])[0], atol=1e-6)
    assert seen == {(i, j) for i in range(5) for j in (0, 2)}


def test_mean_distances_alone(rng) -> None:
    bags = make_bags(rng, 4, 5, 3)
    results = list(block_reductions(bags, memory_mb=1, maxima=False, col_max=True, mean_dist=True))
    assert results and all(r.row_max is None and r.col_max is None for r in results)
    for res in results:
        for t, j in enumerate(res.cols):
            assert res.mean_dist[0, t] == pytest.approx(naive_block(bags[res.rows[0]], bags[j])[2], abs=1e-6)


def test_row_index_restricts_the_images(rng) -> None:
    bags = make_bags(rng, 6, 4, 3)
    pairs = [(int(r.rows[0]), int(c)) for r in block_reductions(bags, memory_mb=1, row_index=[4, 1, 3])
             for c in r.cols]
    assert pairs == [(4, 1), (4, 3), (1, 3)]


def test_empty_index_yields_nothing(rng) -> None:
    bags = make_bags(rng, 3, 4, 3)
    assert list(block_reductions(bags, memory_mb=1, row_index=np.array([], dtype=int))) == []


# --- the threaded path -----------------------------------------------------------------------------


def test_threaded_results_are_bitwise_equal_to_inline_and_in_the_same_order(rng, pooled) -> None:
    bags = make_bags(rng, 11, 40, 16)
    budget = 3 * block_bytes(1, 3, 40, 16) / MIB  # several tasks per row image
    inline = collect(block_reductions(bags, memory_mb=budget, col_max=True, mean_dist=True, workers=1))
    for workers in (2, 3):
        threaded = collect(block_reductions(bags, memory_mb=budget, col_max=True, mean_dist=True, workers=workers))
        assert len(threaded) == len(inline) > 11
        for got, want in zip(threaded, inline):
            assert got[:2] == want[:2]
            for g, w in zip(got[2:], want[2:]):
                assert np.array_equal(g, w)


@pytest.mark.parametrize("aggregate", ["mean", "max", "min", "topk_mean"])
def test_public_functions_on_the_threaded_path_match_naive(rng, pooled, aggregate) -> None:
    bags = make_bags(rng, 9, 12, 6)
    np.testing.assert_allclose(patch_scores(bags, aggregate=aggregate), naive_patch_scores(bags, aggregate),
                               atol=1e-5)
    inline = patch_scores(bags, aggregate=aggregate, memory_mb=pair_bytes(12, 6) / MIB)  # one worker
    assert np.array_equal(patch_scores(bags, aggregate=aggregate), inline)


def test_blas_runs_single_threaded_inside_the_pool_and_is_restored(rng, pooled) -> None:
    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    bags = make_bags(rng, 6, 8, 4)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        inside = []
        for _ in block_reductions(bags, memory_mb=64, workers=2, col_max=True):
            inside.append(blas_threads())
        assert inside and all(t == [1] * len(before) for t in inside)
        assert blas_threads() == before
        # Stopping early (break, or an exception in the consumer) restores the BLAS too.
        gen = block_reductions(bags, memory_mb=64, workers=2, col_max=True)
        next(gen)
        assert blas_threads() == [1] * len(before)
        gen.close()
        assert blas_threads() == before
        with pytest.raises(RuntimeError):
            for _ in block_reductions(bags, memory_mb=64, workers=2):
                raise RuntimeError("consumer failed")
        assert blas_threads() == before


def test_inline_path_also_runs_a_single_threaded_blas(rng) -> None:
    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    bags = make_bags(rng, 4, 5, 3)  # far below INLINE_WORK: runs in the calling thread
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        for workers in (None, 1, 2):
            for _ in block_reductions(bags, memory_mb=64, workers=workers):
                assert blas_threads() == [1] * len(before)
            assert blas_threads() == before


@pytest.mark.parametrize("aggregate", ["mean", "min"])
def test_small_problems_give_the_same_bits_whatever_the_thread_cap(aggregate) -> None:
    # Below INLINE_WORK with the default (no cap) the tasks run inline; a 2-thread BLAS there once
    # chose other SGEMM kernels than the capped paths, and the scores differed in the last bit.
    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    bags = make_bags(np.random.default_rng(0), 30, 64, 16)
    assert 30 * 29 // 2 * 64 * 64 * 16 < _kernel.INLINE_WORK
    with threadpool_limits(limits=2, user_api="blas"):
        default = patch_scores(bags, aggregate=aggregate)
        for n_threads in (1, 2):
            assert np.array_equal(patch_scores(bags, aggregate=aggregate, n_threads=n_threads), default)


def test_uncontrollable_blas_runs_inline_and_says_so(rng, pooled, monkeypatch, caplog) -> None:
    class NoBlas:
        lib_controllers: "list[object]" = []

        def limit(self, **_: object) -> None:  # pragma: no cover - must not be called
            raise AssertionError("limit() called without a BLAS library")

    monkeypatch.setattr(_kernel, "_blas_controller", lambda: NoBlas())
    bags = make_bags(rng, 5, 6, 3)
    with caplog.at_level(logging.DEBUG, logger="anomclust_lite.core.kernel"):
        got = patch_scores(bags, memory_mb=64)
    assert "no BLAS library that threadpoolctl can limit" in caplog.text
    np.testing.assert_allclose(got, naive_patch_scores(bags, "mean"), atol=1e-5)


def test_hausdorff_and_normal_scores_are_the_same_threaded_or_inline(rng, monkeypatch) -> None:
    bags = make_bags(rng, 7, 10, 5)
    normals = make_bags(rng, 4, 9, 5)
    calls = {
        "max-min": lambda: hausdorff_distances(bags),
        "mean-mean": lambda: hausdorff_distances(bags, inner="mean-mean"),
        "normal": lambda: normal_scores(bags, normals),
    }
    inline = {k: f() for k, f in calls.items()}
    monkeypatch.setattr(_kernel, "INLINE_WORK", 0)
    for k, f in calls.items():
        assert np.array_equal(f(), inline[k]), k


# --- n_threads on the public functions ----------------------------------------------------------


def test_n_threads_sets_the_workers_and_not_the_results(rng, pooled, monkeypatch) -> None:
    from anomclust_lite import cross_patch_scores, nearest_patch_similarities, tiered_normal_scores

    bags = make_bags(rng, 9, 12, 6)
    normals = make_bags(rng, 5, 10, 6)
    calls = {
        "patch_scores": lambda nt: patch_scores(bags, n_threads=nt),
        "patch_scores_reference": lambda nt: patch_scores(bags, reference=[0, 3, 4, 8], n_threads=nt),
        "cross_patch_scores": lambda nt: cross_patch_scores(bags, normals, n_threads=nt),
        "normal_scores": lambda nt: normal_scores(bags, normals, n_threads=nt),
        "hausdorff": lambda nt: hausdorff_distances(bags, n_threads=nt),
        "mean-mean": lambda nt: hausdorff_distances(bags, inner="mean-mean", n_threads=nt),
        "sweep": lambda nt: nearest_patch_similarities(bags, n_threads=nt, mean_mean=True).sims,
        "tiers": lambda nt: tiered_normal_scores(bags, normals, np.array([0, 1, 1, 0, 2]), n_tiers=3, n_threads=nt),
    }
    used = []
    real = _kernel._pooled
    monkeypatch.setattr(_kernel, "_pooled", lambda run, tasks, n: used.append(n) or real(run, tasks, n))
    for name, call in calls.items():
        used.clear()
        want = call(None)
        for nt in (1, 3):
            used.clear()
            assert np.array_equal(call(nt), want), (name, nt)
            assert used == ([] if nt == 1 else [3] * len(used)) and (nt == 1 or used), (name, nt, used)
        with pytest.raises(ValueError, match="n_threads"):
            call(0)


# --- sims_to_dists ---------------------------------------------------------------------------------


def test_sims_to_dists_clamps_rounding_above_one() -> None:
    s = np.array([1.0 + 1e-6, 1.0, 0.0, -1.0], dtype=np.float32)
    d = sims_to_dists(s)
    assert d.dtype == np.float32 and np.isfinite(d).all()
    np.testing.assert_allclose(d, [0.0, 0.0, np.sqrt(2), 2.0], atol=1e-6)
    out = s.copy()
    assert sims_to_dists(out, out=out) is out


def _blas_before_threads_test() -> "list[int]":
    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip("needs a BLAS that threadpoolctl controls, running more than one thread")
    return before


def test_concurrent_calls_from_several_threads(rng, pooled) -> None:
    import threading

    before = _blas_before_threads_test()
    bags = make_bags(rng, 16, 48, 32)
    want = patch_scores(bags)
    barrier = threading.Barrier(3)
    results, errors = [], []

    def worker(n_threads) -> None:
        try:
            barrier.wait()
            for _ in range(4):
                results.append(patch_scores(bags, n_threads=n_threads))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(nt,)) for nt in (None, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    assert all(np.array_equal(r, want) for r in results)
    assert blas_threads() == before


def test_a_second_thread_waits_for_the_first_and_then_limits_the_blas_itself(rng, pooled, monkeypatch) -> None:
    """Thread B asks for the kernel while thread A is inside it. B must wait: if B went in at once,
    its limit would either undo A's on the way out (older threadpoolctl) or be ignored because A
    controls the BLAS (newer threadpoolctl), and B's workers would run multi-threaded BLAS."""
    import threading

    before = _blas_before_threads_test()
    bags = make_bags(rng, 4, 6, 3)
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    seen_by_b = []
    real = _kernel._pooled

    def pooled_with_a_pause(run, tasks, n):
        if threading.current_thread().name == "A":
            a_inside.set()
            b_inside.wait(timeout=0.5)  # with the lock B cannot get in: A leaves after the timeout
        else:
            b_inside.set()
            a_done.wait(timeout=5)
            seen_by_b.append(blas_threads())
        yield from real(run, tasks, n)

    def run_a() -> None:
        patch_scores(bags, n_threads=2)
        a_done.set()

    monkeypatch.setattr(_kernel, "_pooled", pooled_with_a_pause)
    a = threading.Thread(target=run_a, name="A")
    b = threading.Thread(target=lambda: patch_scores(bags, n_threads=2), name="B")
    a.start()
    assert a_inside.wait(timeout=10)
    b.start()
    a.join()
    b.join()
    assert seen_by_b == [[1] * len(before)]  # B's own limit holds while its workers run
    assert blas_threads() == before

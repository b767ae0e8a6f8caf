"""Consensus Ward: co-association against a naive loop, the tree's properties, the estimator and CLI wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.hierarchy import linkage

from anomclust_lite import (
    AnomalyClusterer, co_association, consensus_linkage, consensus_temperatures, consensus_ward, cut_linkage,
    nested_cuts, normalize_patches,
    scaled_tau, nmi,
)
from anomclust_lite.core.defaults import CONSENSUS_EXTRA_K, CONSENSUS_TAU_FACTORS
from test_hostile_model_files import _arrays, _with_header, _write

partitions_st = st.integers(2, 12).flatmap(
    lambda n: st.lists(st.lists(st.integers(0, 4), min_size=n, max_size=n), min_size=1, max_size=5))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return nmi(a, b) == pytest.approx(1.0) and len(np.unique(a)) == len(np.unique(b))


def _blobs(n_per: int = 8, k: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.repeat(np.eye(8)[:k] * 3.0, n_per, axis=0)  # 8 dimensions: no nuisance projection
    return normalize_patches(rng.normal(size=(n_per * k, 12, 8)) + centres[:, None, :])


@settings(max_examples=60, deadline=None)
@given(partitions_st)
def test_co_association_matches_a_naive_loop(parts):
    arrays = [np.array(p) for p in parts]
    n = arrays[0].size
    naive = np.array([[np.mean([p[i] == p[j] for p in arrays]) for j in range(n)] for i in range(n)])
    co = co_association(arrays)
    np.testing.assert_array_equal(co, naive)
    assert (co == co.T).all() and (np.diag(co) == 1).all()


@settings(max_examples=40, deadline=None)
@given(partitions_st, st.integers(0, 2**32 - 1))
def test_agreeing_partitions_are_reproduced_whatever_breaks_ties(parts, seed):
    p = np.array(parts[0])
    k = len(np.unique(p))
    rng = np.random.default_rng(seed)
    d = rng.random((p.size, p.size))
    tie_break = (d + d.T) * (1 - np.eye(p.size))
    for tb in (None, tie_break):
        z = consensus_linkage([p, p, p], tie_break=tb)
        assert _same_partition(cut_linkage(z, k), p)


def test_the_tie_break_orders_only_what_the_partitions_cannot_tell_apart():
    p = np.array([0, 0, 0, 1, 1, 1])
    x = np.array([0.0, 0.1, 3.0, 10.0, 10.2, 10.4])[:, None]
    z = consensus_linkage([p], tie_break=np.abs(x - x.T))
    assert _same_partition(cut_linkage(z, 2), p)
    assert _same_partition(cut_linkage(z, 3), np.array([0, 0, 1, 2, 2, 2]))  # inside a cluster: by distance
    with pytest.raises(ValueError, match="tie_break"):
        consensus_linkage([p], tie_break=-np.ones((6, 6)))


def test_nested_cuts_refine_and_stop_at_the_leaves():
    x = np.random.default_rng(0).normal(size=(9, 2))
    cuts = nested_cuts(linkage(x, "ward"), 4, 10)
    assert [len(np.unique(c)) for c in cuts] == [4, 5, 6, 7, 8, 9]
    for coarse, fine in zip(cuts, cuts[1:]):  # every finer cluster lies inside one coarser cluster
        assert all(len(np.unique(coarse[fine == c])) == 1 for c in np.unique(fine))


def test_consensus_of_one_embedding_and_one_cut_is_ward():
    x = np.random.default_rng(1).normal(size=(30, 4))
    z, count = consensus_ward([x], 3, extra=0)
    assert count == 1 and _same_partition(cut_linkage(z, 3), cut_linkage(linkage(x, "ward"), 3))


def test_validators_name_the_argument():
    with pytest.raises(ValueError, match="partitions"):
        co_association([])
    with pytest.raises(ValueError, match=r"partitions\[1\]"):
        co_association([np.zeros(3, int), np.zeros(4, int)])
    with pytest.raises(ValueError, match="embeddings"):
        consensus_ward([np.zeros((3, 2)), np.zeros((4, 2))], 2)


def test_scaled_tau_keeps_the_form():
    assert scaled_tau(0.02, 1.5) == pytest.approx(0.03) and scaled_tau("0.4x", 0.5) == "0.2x"
    with pytest.raises(ValueError, match="factor"):
        scaled_tau(0.02, 0)


def test_the_estimator_combines_five_temperatures_by_default():
    bags = _blobs()
    model = AnomalyClusterer(3).fit(bags)
    assert model.consensus == "auto" and model.consensus_ == len(CONSENSUS_TAU_FACTORS) * (CONSENSUS_EXTRA_K + 1)
    # the labels are the consensus tree's cut: what the report's dendrogram and K slider show
    assert _same_partition(cut_linkage(model.linkage_, 3), model.labels_)
    again = AnomalyClusterer(3).fit(bags)
    assert (again.labels_ == model.labels_).all() and np.array_equal(again.linkage_, model.linkage_)
    truth = np.repeat(np.arange(3), 8)
    assert nmi(truth, model.labels_) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"consensus": "off"}, {"method": "average"}, {"method": "kmeans"},
                                    {"weights": "uniform"}, {"distance": "hausdorff-mean-min"}])
def test_one_tree_where_consensus_is_off_or_does_not_apply(kwargs):
    model = AnomalyClusterer(3, **kwargs).fit(_blobs())
    assert model.consensus_ == 0


def test_consensus_off_is_the_paper_ward_cut():
    bags = _blobs(seed=2)
    off = AnomalyClusterer(3, consensus="off").fit(bags)
    assert _same_partition(off.labels_, cut_linkage(linkage(off.embeddings_, "ward"), 3))


def test_bad_consensus_is_refused_by_name():
    with pytest.raises(ValueError, match="consensus must be one of 'auto', 'off'"):
        AnomalyClusterer(3, consensus="on").fit(_blobs())


def test_saved_models_keep_it_and_older_files_read_as_off(tmp_path):
    model = AnomalyClusterer(3, consensus="off").fit(_blobs())
    model.save(tmp_path / "m.npz")
    assert AnomalyClusterer.load(tmp_path / "m.npz").consensus == "off"
    AnomalyClusterer(3).fit(_blobs()).save(tmp_path / "auto.npz")
    arrays = _arrays(tmp_path / "auto.npz")
    header = json.loads(arrays["header"].tobytes().decode())
    assert header["format_version"] == 5 and header["params"]["consensus"] == "auto"
    params = {key: v for key, v in header["params"].items() if key != "consensus"}
    old = AnomalyClusterer.load(_write(tmp_path / "v4.npz", _with_header(arrays, format_version=4, params=params)))
    assert old.consensus == "off" and old.consensus_ is None



def test_precomputed_first_tree_and_distances_give_the_same_consensus():
    from scipy.spatial.distance import pdist, squareform

    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(60, 5)) for _ in range(3)]
    fresh = consensus_ward(xs, 4)
    given = consensus_ward(xs, 4, linkage=linkage(xs[0], "ward"), distances=squareform(pdist(xs[0])))
    assert fresh[1] == given[1] and np.array_equal(fresh[0], given[0])
    with pytest.raises(ValueError, match="first embedding's"):
        consensus_ward(xs, 4, distances=np.zeros((3, 3)))


def test_consensus_temperatures_start_at_tau():
    assert consensus_temperatures(0.02)[0] == 0.02 and len(consensus_temperatures(0.02)) == len(CONSENSUS_TAU_FACTORS)

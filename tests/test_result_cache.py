"""The cache of fitted steps (scores, embeddings, trust kernels), the cache folder's size cap and clean-up."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import anomclust_lite.core.scores as scores_module
from anomclust_lite import AnomalyClusterer, CacheFolder, embed_bags, normalize_patches
from anomclust_lite.files.cache_folder import CACHE_KINDS, cache_max_mb

from conftest import REPO_ROOT

FITTED = ("labels_", "scores_", "weights_", "embeddings_", "distances_", "anomaly_scores_", "confidence_",
          "novelty_thresholds_", "center_distances_")


def _bags(seed: int = 0, n: int = 24, m: int = 16, d: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalize_patches(rng.normal(size=(n, m, d)) + np.repeat(np.eye(d)[:3], n // 3, 0)[:, None] * 2)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the scoring kernel's runs (every score function goes through scores.block_reductions)."""
    calls = []
    real = scores_module.block_reductions

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scores_module, "block_reductions", spy)
    return calls


def _fit(cache, bags, normals=None, **params) -> AnomalyClusterer:
    weights = "semi" if normals is not None else "unsupervised"
    return AnomalyClusterer(params.pop("k", 3), weights=weights, **params).fit(bags, normal_bags=normals, cache=cache)


def _same(a: AnomalyClusterer, b: AnomalyClusterer) -> None:
    for attr in FITTED:
        assert np.asarray(getattr(a, attr)).tobytes() == np.asarray(getattr(b, attr)).tobytes(), attr
    assert a.good_threshold_ == b.good_threshold_


@pytest.mark.parametrize("semi", [False, True])
def test_a_hit_computes_nothing_and_gives_the_same_bytes(tmp_path: Path, kernel_calls, semi: bool) -> None:
    bags, normals = _bags(), (_bags(1, n=12) if semi else None)
    plain = _fit(None, bags, normals)
    cache = CacheFolder(tmp_path)
    cold = _fit(cache, bags, normals)
    assert cold.cached_steps_ == []
    kernel_calls.clear()
    warm = _fit(cache, bags, normals)
    assert kernel_calls == []
    expected = {"scores", "embeddings", "calibrating novelty"} | (
        {"scoring against the normal bank", "calibrating the good group"} if semi else set())
    assert set(warm.cached_steps_) == expected
    _same(plain, cold)
    _same(cold, warm)


def test_another_k_or_method_runs_no_kernel(tmp_path: Path, kernel_calls) -> None:
    cache = CacheFolder(tmp_path)
    bags = _bags()
    _fit(cache, bags, k=3)
    kernel_calls.clear()
    other = _fit(cache, bags, k=4, method="average")  # N <= reference_size: the novelty reference is every image
    assert kernel_calls == []
    _same(other, _fit(None, bags, k=4, method="average"))


def test_another_k_runs_no_kernel_when_there_are_more_images_than_the_reference(tmp_path: Path, kernel_calls) -> None:
    """N > reference_size: the novelty reference is a seeded subsample drawn before clustering, so any K reuses it."""
    cache = CacheFolder(tmp_path)
    bags = _bags()
    first = _fit(cache, bags, k=2, reference_size=8)
    assert "calibrating novelty" not in first.cached_steps_
    kernel_calls.clear()
    other = _fit(cache, bags, k=5, method="average", reference_size=8)
    assert kernel_calls == [] and "calibrating novelty" in other.cached_steps_
    _same(other, _fit(None, bags, k=5, method="average", reference_size=8))
    kernel_calls.clear()
    _fit(cache, bags, k=5, reference_size=8, seed=1)  # another seed draws another reference: computed again
    assert kernel_calls != []


def test_another_tau_skips_the_kernel_but_not_the_embeddings(tmp_path: Path, kernel_calls) -> None:
    cache = CacheFolder(tmp_path)
    bags = _bags()
    _fit(cache, bags, tau=0.02)
    kernel_calls.clear()
    other = _fit(cache, bags, tau=0.3)
    assert kernel_calls == []
    assert "scores" in other.cached_steps_ and "embeddings" not in other.cached_steps_
    _same(other, _fit(None, bags, tau=0.3))


def _changed_inputs():
    bags, normals = _bags(), _bags(1, n=12)
    flipped = bags.copy()
    flipped[5, 3] = normalize_patches(flipped[5, 3][None, None] + 0.01)[0, 0]  # one patch of one image
    fewer = normals[:-1]
    return bags, normals, [
        ("an image's features", dict(bags=flipped), {"scores", "embeddings"}),
        ("the normal set", dict(normals=fewer), {"scores", "embeddings"}),
        ("tau", dict(tau=0.5), {"embeddings"}),
        ("bag dtype", dict(bag_dtype="float16"), {"scores", "embeddings"}),
        ("reference size (the normal bank)", dict(reference_size=5), {"scoring against the normal bank"}),
        ("seed (the normal bank's subsample)", dict(reference_size=5, seed=3), {"calibrating the good group"}),
    ]


@pytest.mark.parametrize("case", range(6))
def test_changing_what_matters_misses(tmp_path: Path, case: int) -> None:
    bags, normals, cases = _changed_inputs()
    name, change, missed = cases[case]
    cache = CacheFolder(tmp_path)
    base = {"reference_size": 5} if "seed" in name else {}
    _fit(cache, bags, normals, **base)
    params = {k: v for k, v in change.items() if k not in ("bags", "normals")}
    again = _fit(cache, change.get("bags", bags), change.get("normals", normals), **params)
    assert not missed & set(again.cached_steps_), name
    _same(again, _fit(None, change.get("bags", bags), change.get("normals", normals), **params))


def test_aggregate_and_q_key_the_unsupervised_scores(tmp_path: Path) -> None:
    cache = CacheFolder(tmp_path)
    bags = _bags()
    first = embed_bags(bags, aggregate="topk_mean", q=0.2, cache=cache)
    assert first.cached == ()
    assert embed_bags(bags, aggregate="topk_mean", q=0.2, cache=cache).cached == ("scores", "embeddings")
    assert embed_bags(bags, aggregate="topk_mean", q=0.5, cache=cache).cached == ()
    assert embed_bags(bags, aggregate="max", q=0.5, cache=cache).cached == ()
    assert embed_bags(bags, reference=np.arange(0, 24, 2), cache=cache).cached == ()


def test_a_corrupt_entry_is_recomputed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = CacheFolder(tmp_path)
    bags = _bags()
    cold = _fit(cache, bags)
    for npy in (tmp_path / "scores").rglob("*.npy"):
        data = bytearray(npy.read_bytes())
        data[-5] ^= 0x40
        npy.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = _fit(cache, bags)
    assert "scores" not in again.cached_steps_
    assert "checksum mismatch" in caplog.text and "recomputing" in caplog.text
    _same(cold, again)
    assert "scores" in _fit(cache, bags).cached_steps_  # rewritten


def test_progress_reports_stages_and_kernel_pairs(tmp_path: Path) -> None:
    events = []
    AnomalyClusterer(3).fit(_bags(), progress=lambda *e: events.append(e), cache=CacheFolder(tmp_path))
    scoring = [e for e in events if e[0] == "scoring"]
    assert scoring[0][1] == 0 and scoring[-1][1] == scoring[-1][2] == 24 * 23 // 2
    assert [e[1] for e in scoring] == sorted(e[1] for e in scoring)
    assert ("clustering", 0, 0) in events
    events.clear()
    AnomalyClusterer(3).fit(_bags(), progress=lambda *e: events.append(e), cache=CacheFolder(tmp_path))
    assert ("scores (from the cache)", 0, 0) in events and not [e for e in events if e[0] == "scoring"]


# ---------------------------------------------------------------- the folder: size cap, info, clear, leftovers


def _entry(cache: CacheFolder, kind: str, i: int, used: float) -> Path:
    key = f"{i:02x}" * 32
    cache.put(kind, key, np.full(1000, i, np.float32), "float32")
    sidecar = cache.root / kind / key[:2] / f"{key}.json"
    os.utime(sidecar, (used, used))
    return sidecar


def test_trim_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = CacheFolder(tmp_path)
    now = time.time()
    kinds = ["scores", "features", "trust", "scores"]
    sidecars = [_entry(cache, kind, i, now - 1000 + 100 * i) for i, kind in enumerate(kinds)]
    sizes = [p.stat().st_size + p.with_suffix(".npy").stat().st_size for p in sidecars]
    assert cache.get("scores", "00" * 32, (1000,), "float32") is not None  # the oldest is used now: newest
    removed = cache.trim(sizes[0] + sizes[3])
    assert (removed.entries, removed.bytes) == (2, sizes[1] + sizes[2])
    assert [p.exists() for p in sidecars] == [True, False, False, True]
    assert not (sidecars[1].with_suffix(".npy")).exists()
    assert cache.trim(sizes[0] + sizes[3]).entries == 0
    assert cache.trim(sizes[0]).entries == 1 and not sidecars[3].exists()  # entry 3 was used before entry 0
    assert cache.trim(0).entries == 1 and sum(u.entries for u in cache.usage().values()) == 0


def test_usage_and_clear_count_only_what_the_cache_made(tmp_path: Path) -> None:
    cache = CacheFolder(tmp_path)
    now = time.time()
    for i in range(3):
        _entry(cache, "features", i, now)
    _entry(cache, "embeddings", 7, now)
    foreign = tmp_path / "features" / "00" / "notes.txt"
    foreign.write_text("mine")
    (tmp_path / "backbones").mkdir()
    (tmp_path / "backbones" / "model.onnx").write_bytes(b"x" * 10)
    usage = cache.usage()
    assert set(usage) == set(CACHE_KINDS)
    assert (usage["features"].entries, usage["embeddings"].entries, usage["scores"].entries) == (3, 1, 0)
    removed = cache.clear()
    assert removed["features"].entries == 3 and removed["features"].bytes == usage["features"].bytes
    assert sum(u.entries for u in cache.usage().values()) == 0
    assert foreign.read_text() == "mine" and (tmp_path / "backbones" / "model.onnx").exists()


def test_stale_temporary_files_are_removed_only_when_ours_and_old(tmp_path: Path) -> None:
    cache = CacheFolder(tmp_path)
    shard = tmp_path / "scores" / "ab"
    shard.mkdir(parents=True)
    old = shard / f".{'ab' * 32}.npy.k2j4_x9a.tmp"
    new = shard / f".{'ab' * 32}.json.zz81qq0a.tmp"
    foreign = shard / ".someone-elses.tmp"
    for path in (old, new, foreign):
        path.write_bytes(b"partial")
    past = cache.opened - 60
    for path in (old, foreign):
        os.utime(path, (past, past))
    os.utime(new, (cache.opened + 5, cache.opened + 5))  # written by a run that started after us
    assert cache.usage()["scores"].temps == 2
    assert cache.remove_stale_temps() == 1
    assert not old.exists() and new.exists() and foreign.exists()


def test_a_failed_write_turns_caching_off_with_one_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    import errno

    import anomclust_lite.files.array_store as store_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_save_npy", full)
    cache = CacheFolder(tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        model = _fit(cache, _bags(), _bags(1, n=12))
    warnings = [r.getMessage() for r in caplog.records if "cache folder" in r.getMessage()]
    assert len(warnings) == 1
    assert str(tmp_path / "c") in warnings[0] and "No space left on device" in warnings[0]
    assert cache.guard.failure == "No space left on device"
    _same(model, _fit(None, _bags(), _bags(1, n=12)))


def test_a_file_size_limit_degrades_to_no_cache(tmp_path: Path) -> None:
    """A real disk-full: RLIMIT_FSIZE makes every cache write past 1 KiB fail (EFBIG) in a subprocess."""
    code = f"""
import logging, resource, sys
sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
import numpy as np
from anomclust_lite import AnomalyClusterer, CacheFolder, normalize_patches
from test_result_cache import _bags
logging.basicConfig(level=logging.WARNING, format="%(message)s")
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
model = AnomalyClusterer(3).fit(_bags(), cache=CacheFolder({str(tmp_path / 'c')!r}))
print(model.labels_.tolist())
"""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cannot take more files") == 1 and "file size limit" in result.stderr
    assert json.loads(result.stdout) == AnomalyClusterer(3).fit(_bags()).labels_.tolist()
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_cache_cap_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ANOMCLUST_CACHE_MAX_MB", "12.5")
    assert cache_max_mb() == 12.5 and cache_max_mb(3) == 3.0
    monkeypatch.setenv("ANOMCLUST_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="ANOMCLUST_CACHE_MAX_MB"):
        cache_max_mb()


@pytest.mark.parametrize("change", [{"bank_size": 0.5}, {"exact": True}, {"bank_size": 40, "seed": 1}])
def test_the_normal_bank_settings_key_the_scores(tmp_path: Path, change: dict) -> None:
    """The coreset (issue 18, scale) reduces the normal bank before scoring: its settings must miss."""
    cache = CacheFolder(tmp_path)
    bags, normals = _bags(), _bags(1, n=12)
    base = {"bank_size": 40}
    _fit(cache, bags, normals, **base)
    assert "scores" in _fit(cache, bags, normals, **base).cached_steps_
    params = {**base, **change}
    again = _fit(cache, bags, normals, **params)
    assert "scores" not in again.cached_steps_
    _same(again, _fit(None, bags, normals, **params))


def test_a_store_opened_on_its_own_is_never_touched_by_a_hit(tmp_path: Path) -> None:
    """A shared feature cache used read-only (Extractor(cache_dir=DIR)) keeps its files' times; the folder's don't."""
    from anomclust_lite import FeatureCache

    alone = FeatureCache(tmp_path / "alone")
    alone.put("ab" * 32, np.ones(3), {"k": 1})
    sidecar = tmp_path / "alone" / "ab" / f"{'ab' * 32}.json"
    os.utime(sidecar, (1000.0, 1000.0))
    assert alone.get("ab" * 32, {"k": 1}) is not None
    assert sidecar.stat().st_mtime == 1000.0
    folder = CacheFolder(tmp_path / "folder")
    used = _entry(folder, "features", 1, 1000.0)
    assert folder.get("features", "01" * 32, (1000,), "float32") is not None
    assert used.stat().st_mtime > 1000.0

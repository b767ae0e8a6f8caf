"""Tests for anomclust_lite.features.cache and the Extractor's use of it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest
from PIL import Image

from anomclust_lite.features.extractor import Extractor
from anomclust_lite.features.cache import CACHE_FORMAT_VERSION, FeatureCache, file_sha256

SETTINGS = {"model_sha256": "abc", "output": "feat", "resize": 32, "crop": 32, "pool": 3}


def _entry_files(cache: FeatureCache, key: str) -> "tuple[Path, Path]":
    return cache.directory / key[:2] / f"{key}.npy", cache.directory / key[:2] / f"{key}.json"


# ------------------------------------------------------------------ the store
def test_put_get_roundtrip_and_miss(tmp_path: Path, rng: np.random.Generator) -> None:
    cache = FeatureCache(tmp_path / "c" / "nested")
    key = cache.key(file_sha256(b"img"), SETTINGS)
    assert cache.get(key, SETTINGS) is None
    arr = rng.standard_normal((16, 4))
    cache.put(key, arr, SETTINGS)
    out = cache.get(key, SETTINGS, shape=(16, 4))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr.astype(np.float32))
    npy, meta = _entry_files(cache, key)
    assert json.loads(meta.read_text())["format"] == CACHE_FORMAT_VERSION
    assert np.load(npy, allow_pickle=False).shape == (16, 4)
    assert [p.name for p in npy.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_float64_entries_keep_every_bit_and_their_dtype_is_checked(
    tmp_path: Path, rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FeatureCache(tmp_path)
    key = cache.key(file_sha256(b"bags"), SETTINGS)
    arr = rng.standard_normal((5, 5))
    cache.put(key, arr, SETTINGS, dtype="float64")
    out = cache.get(key, SETTINGS, shape=(5, 5), dtype="float64")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, arr)
    with caplog.at_level(logging.WARNING):
        assert cache.get(key, SETTINGS) is None  # a float64 entry is not a float32 one
    assert "float32" in caplog.text
    with pytest.raises(ValueError, match="dtype must be one of"):
        cache.put(key, arr, SETTINGS, dtype="float16")


def test_key_depends_on_content_and_every_setting() -> None:
    base = FeatureCache.key(file_sha256(b"a"), SETTINGS)
    assert base == FeatureCache.key(file_sha256(b"a"), dict(reversed(list(SETTINGS.items()))))
    assert base != FeatureCache.key(file_sha256(b"b"), SETTINGS)
    for name, value in [("model_sha256", "abd"), ("output", "x"), ("resize", 33), ("crop", None), ("pool", None)]:
        assert base != FeatureCache.key(file_sha256(b"a"), {**SETTINGS, name: value}), name


def test_array_without_sidecar_is_a_silent_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = FeatureCache(tmp_path)
    key = cache.key("x", SETTINGS)
    cache.put(key, np.ones((2, 2)), SETTINGS)
    _entry_files(cache, key)[1].unlink()  # as if interrupted between the two writes
    with caplog.at_level(logging.WARNING):
        assert cache.get(key, SETTINGS) is None
    assert caplog.records == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar_settings", "sidecar_junk", "not_npy", "wrong_shape"])
def test_damaged_entries_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    cache = FeatureCache(tmp_path)
    key = cache.key("x", SETTINGS)
    cache.put(key, np.arange(32, dtype=np.float32).reshape(8, 4), SETTINGS)
    npy, meta = _entry_files(cache, key)
    shape = (8, 4)
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-20])
    elif damage == "flip":
        data = bytearray(npy.read_bytes())
        data[-3] ^= 0x10
        npy.write_bytes(bytes(data))
    elif damage == "sidecar_settings":
        m = json.loads(meta.read_text())
        m["settings"]["resize"] = 999
        meta.write_text(json.dumps(m))
    elif damage == "sidecar_junk":
        meta.write_text("{not json")
    elif damage == "not_npy":
        npy.write_text("hello")
    else:
        shape = (4, 8)
    with caplog.at_level(logging.WARNING, logger="anomclust_lite.features.cache"):
        assert cache.get(key, SETTINGS, shape=shape) is None
    assert any("recomputing" in r.getMessage() for r in caplog.records)
    cache.put(key, np.zeros((8, 4)), SETTINGS)  # overwritten by the next put
    assert cache.get(key, SETTINGS, shape=(8, 4)) is not None


def test_cache_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="cache_dir"):
        FeatureCache(tmp_path / "f")


# ------------------------------------------------------------ with Extractor
SMALL = dict(resize=32, crop=32, batch_size=2)


class _CountingSession:
    """Wraps an onnxruntime session and counts the images passed to ``run``."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.images = 0

    def run(self, names: Any, feeds: Any) -> Any:
        self.images += next(iter(feeds.values())).shape[0]
        return self._session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _extractor(model: Path, cache_dir: Path, **kw: Any) -> "tuple[Extractor, _CountingSession]":
    ext = Extractor(model, cache_dir=cache_dir, **{**SMALL, **kw})
    ext.grid  # resolve the grid before counting
    counter = _CountingSession(ext.backbone.ort_session)
    ext.backbone.ort_session = counter
    return ext, counter


@pytest.fixture
def make_model() -> Any:
    """The tiny-model builder (skips without onnx / onnxruntime)."""
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import make_model

    return make_model


@pytest.fixture
def images(tmp_path: Path, rng: np.random.Generator) -> List[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(5):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 200, (40, 44, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_second_run_skips_inference(tmp_path: Path, images: List[Path], make_model: Any) -> None:
    model = make_model(tmp_path / "m.onnx")
    first, c1 = _extractor(model, tmp_path / "cache")
    r1 = first.extract_all(images)
    assert (r1.computed, r1.cache_hits, c1.images) == (5, 0, 5)
    second, c2 = _extractor(model, tmp_path / "cache")
    r2 = second.extract_all(images)
    assert (r2.computed, r2.cache_hits, c2.images) == (0, 5, 0)
    np.testing.assert_array_equal(r1.bags, r2.bags)
    # Same content under another name is a hit; changed content is a miss.
    shutil.copy(images[0], tmp_path / "copy.png")
    Image.new("RGB", (40, 40), (10, 20, 30)).save(images[1])
    r3 = second.extract_all([tmp_path / "copy.png", images[1]])
    assert (r3.cache_hits, r3.computed, c2.images) == (1, 1, 1)


def test_corrupt_entry_is_recomputed(
    tmp_path: Path, images: List[Path], make_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    model = make_model(tmp_path / "m.onnx")
    ext, counter = _extractor(model, tmp_path / "cache")
    expected = ext.extract(images)
    entries = sorted((tmp_path / "cache").glob("*/*.npy"))
    assert len(entries) == 5
    entries[0].write_bytes(entries[0].read_bytes()[:-7])  # truncated
    data = bytearray(entries[1].read_bytes())
    data[-1] ^= 0x01  # tampered
    entries[1].write_bytes(bytes(data))
    counter.images = 0
    with caplog.at_level(logging.WARNING):
        res = ext.extract_all(images)
    assert (res.cache_hits, res.computed, counter.images) == (3, 2, 2)
    assert sum("recomputing" in r.getMessage() for r in caplog.records) == 2
    np.testing.assert_array_equal(res.bags, expected)
    counter.images = 0
    assert ext.extract_all(images).cache_hits == 5 and counter.images == 0  # repaired


def test_stale_entries_on_model_or_preprocessing_change(tmp_path: Path, images: List[Path], make_model: Any) -> None:
    model_a = make_model(tmp_path / "a.onnx", seed=0)
    model_b = make_model(tmp_path / "b.onnx", seed=1)
    cache = tmp_path / "cache"
    a, _ = _extractor(model_a, cache)
    bags_a = a.extract(images)
    b, cb = _extractor(model_b, cache)
    rb = b.extract_all(images)
    assert rb.cache_hits == 0 and cb.images == 5
    assert not np.allclose(rb.bags, bags_a)
    for kw in ({"pool": None}, {"resize": 40}):
        ext, counter = _extractor(model_a, cache, **kw)
        assert ext.extract_all(images).cache_hits == 0 and counter.images == 5
    a2, ca = _extractor(model_a, cache)
    assert a2.extract_all(images).cache_hits == 5 and ca.images == 0


def test_interrupted_run_resumes(tmp_path: Path, images: List[Path], make_model: Any) -> None:
    model = make_model(tmp_path / "m.onnx")
    ext, _ = _extractor(model, tmp_path / "cache")

    def stop(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ext.extract_all(images, progress=stop)
    again, counter = _extractor(model, tmp_path / "cache")
    res = again.extract_all(images)
    assert res.cache_hits == 2 and res.computed == 3 and counter.images == 3
    np.testing.assert_array_equal(res.bags, Extractor(model, **SMALL).extract(images))

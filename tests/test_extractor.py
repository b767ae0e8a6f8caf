"""Tests for anomclust_lite.features.extractor with tiny ONNX models (see _tiny_onnx.py)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("onnxruntime")
from _tiny_onnx import make_model, reference_bags  # noqa: E402

from anomclust_lite.features.extractor import Extractor  # noqa: E402
from anomclust_lite.features.images import ImageLoadError, load_image  # noqa: E402
from anomclust_lite.features.onnx_session import POOLED_METADATA_KEY  # noqa: E402
from anomclust_lite.features.pipeline import ExtractionResult  # noqa: E402
from anomclust_lite.features.postprocess import avg_pool3x3, feature_map_to_patches  # noqa: E402
from anomclust_lite.features.preprocess import preprocess  # noqa: E402

SMALL = dict(resize=32, crop=32)


@pytest.fixture
def images(tmp_path: Path, rng: np.random.Generator) -> List[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(7):
        size = (40 + 3 * i, 36 + i)
        arr = rng.integers(0, 200, (size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "dyn.onnx")


def _inputs(paths: List[Path], resize: int = 32, crop: "int | None" = 32) -> np.ndarray:
    return np.stack([preprocess(load_image(p), resize=resize, crop=crop) for p in paths])


# --------------------------------------------------------------------- pooling
def _naive_pool(x: np.ndarray) -> np.ndarray:
    *lead, h, w = x.shape
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            total = np.zeros(lead)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        total = total + x[..., i + di, j + dj]
            out[..., i, j] = total / 9.0  # zero padding counted (count_include_pad=True)
    return out


@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_avg_pool3x3_matches_naive_loop(c: int, h: int, w: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((2, c, h, w)).astype(np.float32)
    out = avg_pool3x3(x)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, _naive_pool(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_avg_pool3x3_border_counts_padding() -> None:
    out = avg_pool3x3(np.ones((4, 5)))
    assert out.dtype == np.float64
    assert out[0, 0] == pytest.approx(4 / 9) and out[0, 2] == pytest.approx(6 / 9) and out[2, 2] == 1.0
    with pytest.raises(ValueError, match="feature_map"):
        avg_pool3x3(np.ones(3))
    with pytest.raises(ValueError, match="feature_map"):
        avg_pool3x3(np.ones((3, 3), dtype=int))


def test_feature_map_to_patches_row_major() -> None:
    fm = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    patches = feature_map_to_patches(fm)
    assert patches.shape == (2, 20, 3)
    for i in range(4):
        for j in range(5):
            np.testing.assert_array_equal(patches[1, i * 5 + j], fm[1, :, i, j])
    with pytest.raises(ValueError, match="feature_maps"):
        feature_map_to_patches(fm[0])


# ------------------------------------------------------------------ extraction
def test_bags_match_numpy_reference(model: Path, images: List[Path]) -> None:
    ext = Extractor(model, batch_size=3, **SMALL)
    bags = ext.extract(images)
    assert bags.shape == (7, 16, 4) and bags.dtype == np.float32
    assert ext.grid == (4, 4) and ext.dim == 4
    np.testing.assert_allclose(bags, reference_bags(_inputs(images)), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(bags.astype(np.float64), axis=-1), 1.0, atol=1e-6)


def test_pool_disabled_and_pooled_graph(tmp_path: Path, model: Path, images: List[Path]) -> None:
    unpooled = reference_bags(_inputs(images[:3]), pool=False)
    for pool in (None, 1):
        bags = Extractor(model, pool=pool, **SMALL).extract(images[:3])
        np.testing.assert_allclose(bags, unpooled, atol=2e-5)
    pooled_model = make_model(tmp_path / "pooled.onnx", metadata={POOLED_METADATA_KEY: "1"})
    ext = Extractor(pooled_model, **SMALL)
    assert ext.pooling_in_graph and ext.describe()["pooling_in_graph"] is True
    np.testing.assert_allclose(ext.extract(images[:3]), unpooled, atol=2e-5)  # not pooled a second time
    with pytest.raises(ValueError, match="pool"):
        Extractor(pooled_model, pool=None, **SMALL)
    with pytest.raises(ValueError, match="pool"):
        Extractor(model, pool=2, **SMALL)


def test_fixed_batch_equals_dynamic_batch(tmp_path: Path, model: Path, images: List[Path]) -> None:
    fixed = make_model(tmp_path / "fixed.onnx", batch=1, size=32)
    a = Extractor(model, batch_size=4, **SMALL).extract(images)
    b = Extractor(fixed, batch_size=4, **SMALL).extract(images)
    c = Extractor(model, batch_size=1, **SMALL).extract(images)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    assert Extractor(fixed, **SMALL).describe()["batch_size"] == 1


def test_order_is_deterministic_with_many_workers(model: Path, images: List[Path]) -> None:
    ext = Extractor(model, batch_size=2, decode_workers=4, **SMALL)
    shuffled = [images[i] for i in (3, 0, 6, 1, 5, 2, 4)]
    bags = ext.extract(shuffled)
    singles = np.concatenate([ext.extract([p]) for p in shuffled])
    np.testing.assert_array_equal(bags, singles)
    np.testing.assert_array_equal(bags, ext.extract(shuffled))


def test_full_frame_resize(model: Path, images: List[Path]) -> None:
    bags = Extractor(model, resize=32, crop=None).extract(images[:2])
    np.testing.assert_allclose(bags, reference_bags(_inputs(images[:2], 32, None)), atol=2e-5)


def test_embed_preprocessed_batch(model: Path, images: List[Path]) -> None:
    ext = Extractor(model, batch_size=2, **SMALL)
    x = _inputs(images)
    np.testing.assert_allclose(ext.embed(x), ext.extract(images), atol=1e-6)
    with pytest.raises(ValueError, match="batch"):
        ext.embed(x[:, :, :16])


# --------------------------------------------------------------------- outputs
def test_several_outputs_need_a_name(tmp_path: Path, images: List[Path]) -> None:
    multi = make_model(tmp_path / "multi.onnx", extra=("stride16", "flat"))
    with pytest.raises(ValueError, match="outputs 'feat', 'feat16', 'flat'; choose one with output="):
        Extractor(multi, **SMALL)
    ext = Extractor(multi, output="feat16", **SMALL)
    assert ext.grid == (2, 2) and ext.dim == 6
    assert ext.extract(images[:2]).shape == (2, 4, 6)
    with pytest.raises(ValueError, match="'nope' is not an output.*'feat', 'feat16', 'flat'"):
        Extractor(multi, output="nope", **SMALL)
    with pytest.raises(ValueError, match="4-D"):
        Extractor(multi, output="flat", **SMALL)
    with pytest.raises(ValueError, match="output"):
        Extractor(multi, output=3, **SMALL)  # type: ignore[arg-type]


def test_nan_output_names_the_image(tmp_path: Path, images: List[Path]) -> None:
    nan_model = make_model(tmp_path / "nan.onnx", extra=("nan",))
    white = tmp_path / "white.png"
    Image.new("RGB", (40, 40), (255, 255, 255)).save(white)
    ext = Extractor(nan_model, batch_size=2, **SMALL)
    with pytest.raises(ValueError, match="white.png.*NaN"):
        ext.extract([images[0], white, images[1]])
    res = ext.extract_all([images[0], white, images[1]])
    assert [p.name for p in res.paths] == ["00.png", "01.png"]
    assert [(f.path.name, "NaN" in f.reason) for f in res.failures] == [("white.png", True)]
    assert np.isfinite(res.bags).all()


def test_all_zero_patches_are_an_error(tmp_path: Path, images: List[Path]) -> None:
    zero_model = make_model(tmp_path / "zero.onnx", extra=("zero",))
    with pytest.raises(ValueError, match="00.png.*all-zero"):
        Extractor(zero_model, **SMALL).extract(images[:1])


# ---------------------------------------------------------- bad model files
def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        Extractor(tmp_path / "missing.onnx", **SMALL)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.onnx.*empty file"):
        Extractor(tmp_path / "empty.onnx", **SMALL)
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="junk.onnx could not be loaded as an ONNX model"):
        Extractor(tmp_path / "junk.onnx", **SMALL)
    (tmp_path / "text.onnx").write_text("hello, not a model\n")
    with pytest.raises(ValueError, match="text.onnx"):
        Extractor(tmp_path / "text.onnx", **SMALL)
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(FileNotFoundError, match="dir.onnx.*not a file"):
        Extractor(tmp_path / "dir.onnx", **SMALL)


def test_fixed_input_size_must_match_crop(tmp_path: Path) -> None:
    fixed = make_model(tmp_path / "fixed.onnx", batch=1, size=32)
    with pytest.raises(ValueError, match="crop"):
        Extractor(fixed, resize=32, crop=24)
    Extractor(fixed, resize=32, crop=None)  # full frame 32x32 fits


def test_bad_arguments(model: Path, images: List[Path]) -> None:
    with pytest.raises(ValueError, match="crop"):
        Extractor(model, resize=32, crop=40)
    with pytest.raises(ValueError, match="resize"):
        Extractor(model, resize=-1)
    with pytest.raises(ValueError, match="batch_size"):
        Extractor(model, batch_size=0, **SMALL)
    with pytest.raises(ValueError, match="threads"):
        Extractor(model, threads=0, **SMALL)
    with pytest.raises(ValueError, match="device"):
        Extractor(model, device="tpu", **SMALL)
    ext = Extractor(model, **SMALL)
    with pytest.raises(ValueError, match="paths"):
        ext.extract(str(images[0]))
    with pytest.raises(ValueError, match="paths"):
        ext.extract([images[0], 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="on_error"):
        ext.extract_all(images, on_error="ignore")
    with pytest.raises(ValueError, match="progress"):
        ext.extract_all(images, progress="yes")  # type: ignore[arg-type]


def test_cuda_without_provider(model: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider available here")
    with pytest.raises(ValueError, match="device='cuda'.*CUDAExecutionProvider"):
        Extractor(model, device="cuda", **SMALL)


def test_missing_onnxruntime_is_a_clear_import_error(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'^feature extraction needs onnxruntime: pip install "anomclust_lite\[onnx\]"$'):
        Extractor(model, **SMALL)


# --------------------------------------------------------- errors, metadata
def test_extract_all_collects_failures_in_order(tmp_path: Path, model: Path, images: List[Path]) -> None:
    (tmp_path / "bad.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [images[0], tmp_path / "bad.png", images[1], tmp_path / "empty.png", tmp_path / "gone.png", images[2]]
    seen = []
    res = Extractor(model, batch_size=2, **SMALL).extract_all(paths, progress=lambda d, t: seen.append((d, t)))
    assert isinstance(res, ExtractionResult)
    assert res.paths == images[:3]
    assert [f.path.name for f in res.failures] == ["bad.png", "empty.png", "gone.png"]
    assert all("\n" not in f.reason for f in res.failures)
    np.testing.assert_allclose(res.bags, reference_bags(_inputs(images[:3])), atol=2e-5)
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert res.computed == 3 and res.cache_hits == 0
    assert set(res.timings) == {"decode", "inference", "postprocess", "wait", "total"}
    with pytest.raises(ImageLoadError, match="bad.png"):
        Extractor(model, **SMALL).extract(paths)


def test_empty_path_list(model: Path) -> None:
    res = Extractor(model, **SMALL).extract_all([])
    assert res.bags.shape == (0, 16, 4) and res.paths == [] and res.failures == []


def test_describe_and_thread_settings(model: Path) -> None:
    ext = Extractor(model, threads=1, decode_workers=2, **SMALL)
    info = ext.describe()
    json.dumps(info)
    assert info["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() == ext.model_hash
    assert info["output"] == "feat" and info["grid"] == [4, 4] and info["dim"] == 4
    assert info["providers"] == ["CPUExecutionProvider"]
    assert ext.thread_settings["intra_op_num_threads"] == 1
    assert ext.thread_settings["decode_workers"] == 2
    assert Extractor(model, **SMALL).thread_settings["intra_op_num_threads"] == "default"
    assert "dyn.onnx" in repr(ext)


def test_model_from_environment(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANOMCLUST_MODEL", str(model))
    assert Extractor(**SMALL).model_path == model

"""The embedded default backbone: the package file itself (runs in CI) and against ../shared."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _backbone_support import random_weights, real_images, relative_error
from anomclust_lite.backbones import embedded
from anomclust_lite.backbones.embedded import (
    EMBEDDED_FILE,
    EMBEDDED_SHA256,
    EmbeddedBackboneError,
    embedded_model_bytes,
    embedded_model_path,
    load_embedded_weights,
    pack_weights,
)
from anomclust_lite.backbones.resnet50v2 import (
    R50V2_INPUT_NAME,
    load_resnet50v2_npy_dir,
    resnet50v2_layer2_numpy,
    resnet50v2_layer2_shapes,
)

ort = pytest.importorskip("onnxruntime")


def test_package_file_is_the_pinned_one() -> None:
    data = EMBEDDED_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == EMBEDDED_SHA256, (
        "the embedded .npz changed: run tools/build_embedded_backbone.py and update EMBEDDED_SHA256"
    )
    assert 2_000_000 < len(data) < 4_000_000


def test_package_file_is_plain_npy_entries_with_the_documented_types() -> None:
    with zipfile.ZipFile(EMBEDDED_FILE) as zf:
        names = sorted(zf.namelist())
    shapes = resnet50v2_layer2_shapes()
    assert names == sorted([f"{k}.npy" for k in shapes] + ["__source__.npy"])
    with np.load(EMBEDDED_FILE, allow_pickle=False) as npz:
        source = json.loads(str(npz["__source__"]))
        assert "resnet50-v2-7" in source["model"] and "Apache-2.0" in source["model"]
        for key, shape in shapes.items():
            arr = npz[key]
            assert arr.shape == shape
            float32 = arr.ndim == 1 or key in {"resnetv24_conv0_weight", "resnetv24_stage1_conv0_weight",
                                               "resnetv24_stage1_conv3_weight"}
            assert arr.dtype == (np.float32 if float32 else np.float16), key
            assert np.isfinite(arr).all()


def test_weights_look_trained_not_random() -> None:
    """Trained running variances span orders of magnitude; freshly initialised ones are all 1."""
    w = load_embedded_weights()
    var = w["resnetv24_stage2_batchnorm0_running_var"]
    assert var.max() / var.min() > 10
    assert not np.allclose(w["resnetv24_stage3_batchnorm0_running_mean"], 0.0)


def test_embedded_model_matches_numpy_forward_of_the_same_weights() -> None:
    weights = load_embedded_weights()
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 32)).astype(np.float32)
    s = ort.InferenceSession(embedded_model_bytes(), providers=["CPUExecutionProvider"])
    got = s.run(None, {R50V2_INPUT_NAME: x})[0]
    assert got.shape == (2, 512, 5, 4)
    assert relative_error(got, resnet50v2_layer2_numpy(weights, x)) < 1e-5
    meta = s.get_modelmeta().custom_metadata_map
    assert meta["anomclust_lite.weights_sha256"] == EMBEDDED_SHA256
    assert "resnet50-v2-7" in meta["anomclust_lite.source"] and meta["anomclust_lite.pooled"] == "1"


def test_model_bytes_are_deterministic() -> None:
    assert embedded_model_bytes() == embedded_model_bytes()


def test_cached_model_is_written_once_and_content_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = embedded_model_path(tmp_path / "cache")
    assert path.parent == tmp_path / "cache" and path.read_bytes() == embedded_model_bytes()
    stamp = path.stat().st_mtime_ns
    assert embedded_model_path(tmp_path / "cache") == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # damaged in place
    with caplog.at_level(logging.WARNING):
        assert embedded_model_path(tmp_path / "cache") == path
    assert "differs" in caplog.text
    assert path.read_bytes() == embedded_model_bytes()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_damaged_package_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "w.npz"
    bad.write_bytes(EMBEDDED_FILE.read_bytes()[:1000])
    monkeypatch.setattr(embedded, "EMBEDDED_FILE", bad)
    with pytest.raises(EmbeddedBackboneError, match="reinstall"):
        load_embedded_weights()
    with pytest.raises(EmbeddedBackboneError, match="not a readable weights file"):
        load_embedded_weights(bad)
    monkeypatch.setattr(embedded, "EMBEDDED_FILE", tmp_path / "missing.npz")
    with pytest.raises(EmbeddedBackboneError, match="cannot be read"):
        load_embedded_weights()


def test_pack_weights_is_deterministic_and_loads_back(tmp_path: Path) -> None:
    w = random_weights(seed=5)
    data = pack_weights(w, {"model": "random"})
    assert data == pack_weights(w, {"model": "random"})
    (tmp_path / "r.npz").write_bytes(data)
    back = load_embedded_weights(tmp_path / "r.npz")
    err = max(np.abs(back[k] - w[k]).max() / np.abs(w[k]).max() for k in w)
    assert 0 < err < 1e-3  # float16 rounding of the kernels, nothing more


# --------------------------------------------------------------------------- against ../shared


@pytest.fixture(scope="module")
def shared_npy(shared_dir: Path) -> Path:
    folder = shared_dir / "weights" / "resnet50v2"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.mark.realdata
def test_package_file_rebuilds_from_the_shared_weights(shared_npy: Path) -> None:
    weights = load_resnet50v2_npy_dir(shared_npy)
    rebuilt = np.load(io.BytesIO(pack_weights(weights, {})), allow_pickle=False)
    with np.load(EMBEDDED_FILE, allow_pickle=False) as npz:
        for key in resnet50v2_layer2_shapes():
            np.testing.assert_array_equal(npz[key], rebuilt[key], err_msg=key)


@pytest.mark.realdata
def test_embedded_model_within_1e3_of_the_reference_build(shared_dir: Path) -> None:
    from anomclust_lite.backbones import reference as ref

    reference = shared_dir / "models" / "resnet50v2_layer2_fp32.onnx"
    if not reference.is_file():
        pytest.skip(f"{reference} not found")
    x = real_images(shared_dir, n_per_set=4)
    got = ort.InferenceSession(embedded_model_bytes(), providers=["CPUExecutionProvider"]).run(None, {R50V2_INPUT_NAME: x})[0]
    ref_map = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(["layer2"], {"input": x})[0]
    err = relative_error(got, ref.pool2d(ref_map, 3, stride=1, pad=1, mode="avg"))
    assert err < 1e-3


@pytest.mark.realdata
def test_embedded_model_within_1e3_of_numpy_forward_on_float32_weights(shared_dir: Path, shared_npy: Path) -> None:
    x = real_images(shared_dir, n_per_set=1)[:, :, 48:112, 64:144]
    got = ort.InferenceSession(embedded_model_bytes(), providers=["CPUExecutionProvider"]).run(None, {R50V2_INPUT_NAME: x})[0]
    assert relative_error(got, resnet50v2_layer2_numpy(load_resnet50v2_npy_dir(shared_npy), x)) < 1e-3

"""The ResNet-50 v2 layer-2 builder: graph vs an independent NumPy forward pass, and vs the reference build."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from anomclust_lite.backbones import reference as ref
from _backbone_support import random_weights, real_images, relative_error
from anomclust_lite.backbones.resnet50v2 import (
    R50V2_INPUT_NAME,
    R50V2_OUTPUT_NAME,
    build_resnet50v2_layer2_onnx,
    check_resnet50v2_weights,
    load_resnet50v2_npy_dir,
    resnet50v2_layer2_numpy,
    resnet50v2_layer2_shapes,
)

ort = pytest.importorskip("onnxruntime")


def session(data: bytes):  # type: ignore[no-untyped-def]
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_names_follow_the_model_zoo_layout() -> None:
    shapes = resnet50v2_layer2_shapes()
    convs = sorted(k for k in shapes if k.endswith("_weight"))
    assert convs == sorted(["resnetv24_conv0_weight"] + [f"resnetv24_stage1_conv{i}_weight" for i in range(10)]
                           + [f"resnetv24_stage2_conv{i}_weight" for i in range(13)])
    assert shapes["resnetv24_stage1_conv3_weight"] == (256, 64, 1, 1)  # block 0's shortcut
    assert shapes["resnetv24_stage1_conv4_weight"] == (64, 256, 1, 1)  # block 1's first conv
    assert shapes["resnetv24_stage2_conv1_weight"] == (128, 128, 3, 3)
    assert shapes["resnetv24_stage2_batchnorm11_gamma"] == (128,)
    assert shapes["resnetv24_stage3_batchnorm0_running_var"] == (512,)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 40, 23)])
def test_onnx_graph_matches_numpy_forward(shape: tuple) -> None:
    w = random_weights(seed=shape[0])
    s = session(build_resnet50v2_layer2_onnx(w))
    assert [i.name for i in s.get_inputs()] == [R50V2_INPUT_NAME]
    assert [o.name for o in s.get_outputs()] == [R50V2_OUTPUT_NAME]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    got = s.run(None, {R50V2_INPUT_NAME: x})[0]
    want = resnet50v2_layer2_numpy(w, x)
    assert got.shape == (shape[0], 512, -(-shape[2] // 8), -(-shape[3] // 8))
    assert relative_error(got, want) < 1e-5


def test_numpy_forward_pools_as_documented() -> None:
    w = random_weights()
    x = np.random.default_rng(4).standard_normal((1, 3, 24, 24))
    raw = resnet50v2_layer2_numpy(w, x, pooled=False)
    assert (raw >= 0).all()  # the post-activation ReLU
    np.testing.assert_allclose(resnet50v2_layer2_numpy(w, x), ref.pool2d(raw, 3, stride=1, pad=1, mode="avg"))


def test_metadata_and_opset() -> None:
    s = session(build_resnet50v2_layer2_onnx(random_weights(), metadata={"extra": "x"}))
    meta = s.get_modelmeta().custom_metadata_map
    assert meta["anomclust_lite.pooled"] == "1" and meta["anomclust_lite.stride"] == "8"
    assert meta["anomclust_lite.backbone"] == "resnet50_v2.layer2" and meta["extra"] == "x"


def test_onnx_checker_accepts_the_model() -> None:
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.ModelProto.FromString(build_resnet50v2_layer2_onnx(random_weights())),
                             full_check=True)


def test_check_weights_names_the_problem() -> None:
    w = random_weights()
    with pytest.raises(ValueError, match="must be a mapping"):
        check_resnet50v2_weights([1, 2])
    bad = dict(w)
    del bad["resnetv24_stage2_conv5_weight"]
    with pytest.raises(ValueError, match="missing 'resnetv24_stage2_conv5_weight'"):
        check_resnet50v2_weights(bad)
    bad = dict(w, resnetv24_conv0_weight=np.zeros((64, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(64, 3, 3, 3\)"):
        check_resnet50v2_weights(bad)
    bad = dict(w, resnetv24_batchnorm1_beta=np.full(64, np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        check_resnet50v2_weights(bad)
    bad = dict(w, resnetv24_batchnorm1_running_var=-np.ones(64, np.float32))
    with pytest.raises(ValueError, match="negative"):
        check_resnet50v2_weights(bad)
    bad = dict(w, resnetv24_batchnorm1_gamma=np.array(["a"] * 64))
    with pytest.raises(ValueError, match="numeric"):
        check_resnet50v2_weights(bad)


def test_npy_dir_loader(tmp_path: Path) -> None:
    w = random_weights()
    for key, arr in w.items():
        np.save(tmp_path / f"{key}.npy", arr)
    loaded = load_resnet50v2_npy_dir(tmp_path)
    assert set(loaded) == set(w) and all(np.array_equal(loaded[k], w[k]) for k in w)
    np.save(tmp_path / "resnetv24_conv0_weight.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain .npy"):
        load_resnet50v2_npy_dir(tmp_path)
    (tmp_path / "resnetv24_conv0_weight.npy").unlink()
    with pytest.raises(FileNotFoundError, match="resnetv24_conv0_weight.npy"):
        load_resnet50v2_npy_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_resnet50v2_npy_dir(tmp_path / "nope")


# --------------------------------------------------------------------------- real weights (../shared)


@pytest.fixture(scope="module")
def shared_weights(shared_dir: Path) -> Dict[str, np.ndarray]:
    folder = shared_dir / "weights" / "resnet50v2"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return load_resnet50v2_npy_dir(folder)


@pytest.mark.realdata
def test_real_weights_match_the_reference_build(shared_dir: Path, shared_weights: Dict[str, np.ndarray]) -> None:
    reference = shared_dir / "models" / "resnet50v2_layer2_fp32.onnx"
    if not reference.is_file():
        pytest.skip(f"{reference} not found")
    x = real_images(shared_dir)
    got = session(build_resnet50v2_layer2_onnx(shared_weights)).run(None, {R50V2_INPUT_NAME: x})[0]
    ref_map = session(reference.read_bytes()).run(["layer2"], {"input": x})[0]
    want = ref.pool2d(ref_map, 3, stride=1, pad=1, mode="avg")
    assert relative_error(got, want) < 1e-5


@pytest.mark.realdata
def test_real_weights_match_numpy_forward(shared_dir: Path, shared_weights: Dict[str, np.ndarray]) -> None:
    x = real_images(shared_dir, n_per_set=1)[:, :, 64:128, 80:160]  # a crop keeps the NumPy pass short
    got = session(build_resnet50v2_layer2_onnx(shared_weights)).run(None, {R50V2_INPUT_NAME: x})[0]
    assert relative_error(got, resnet50v2_layer2_numpy(shared_weights, x)) < 1e-5

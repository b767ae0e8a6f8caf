"""Tests for the WRN-50-2 layer-2 ONNX export (random weights; no torch, no network)."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _torch_writer import save_legacy, save_zip
from anomclust_lite.backbones import reference
from anomclust_lite.backbones.torch_checkpoint import UnsafeCheckpointError
from anomclust_lite.backbones.wrn50 import (
    WRN50_CHECKPOINT_FILENAME,
    WRN50_INPUT_NAME,
    WRN50_OUTPUT_NAME,
    ChecksumError,
    DownloadError,
    build_wrn50_layer2_onnx,
    download_checkpoint,
    export_wrn50_onnx,
    random_wrn50_state_dict,
    verify_checkpoint,
    wrn50_layer2_numpy,
    wrn50_layer2_shapes,
)
from anomclust_lite.files.user_cache import user_cache_dir

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "export_wrn50.py"

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-4 * float(np.abs(b).max()) + 1e-6


def session(model_or_path) -> "ort.InferenceSession":
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    src = model_or_path if isinstance(model_or_path, bytes) else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def state_dict():
    return random_wrn50_state_dict(seed=7)


@pytest.fixture(scope="module")
def model(state_dict):
    return build_wrn50_layer2_onnx(state_dict)


@pytest.fixture(scope="module")
def sess(model):
    return session(model)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the real user cache."""
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- architecture


def test_shapes_match_torchvision_wide_resnet50_2():
    s = wrn50_layer2_shapes()
    assert list(s)[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                           "bn1.num_batches_tracked"]
    assert s["conv1.weight"] == (64, 3, 7, 7)
    assert s["layer1.0.conv1.weight"] == (128, 64, 1, 1)
    assert s["layer1.0.conv2.weight"] == (128, 128, 3, 3)
    assert s["layer1.0.conv3.weight"] == (256, 128, 1, 1)
    assert s["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert s["layer1.2.conv1.weight"] == (128, 256, 1, 1)
    assert s["layer2.0.conv1.weight"] == (256, 256, 1, 1)
    assert s["layer2.0.conv2.weight"] == (256, 256, 3, 3)
    assert s["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert s["layer2.0.downsample.1.running_var"] == (512,)
    assert s["layer2.3.conv3.weight"] == (512, 256, 1, 1)
    assert s["layer2.3.bn3.num_batches_tracked"] == ()
    assert "layer1.1.downsample.0.weight" not in s and "layer3.0.conv1.weight" not in s
    # 7 blocks x 3 convs + 2 downsamples + stem = 24 convs, each with a 5-entry BatchNorm.
    assert len(s) == 24 * 6
    conv_params = sum(int(np.prod(v)) for k, v in s.items() if len(v) == 4)
    assert conv_params == 9408 + 204800 + 2 * 212992 + 917504 + 3 * 851968


def test_random_state_dict_deterministic_and_complete():
    a, b, c = random_wrn50_state_dict(seed=1), random_wrn50_state_dict(seed=1), random_wrn50_state_dict(seed=2)
    assert {k: v.shape for k, v in a.items()} == wrn50_layer2_shapes()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    assert a["bn1.running_mean"].std() > 0.05 and (a["bn1.running_var"] != 1).all()
    with pytest.raises(ValueError, match="seed"):
        random_wrn50_state_dict(seed=-1)


# --------------------------------------------------------------------------- ONNX graph


def test_model_interface_and_metadata(model):
    onnx.checker.check_model(onnx.ModelProto.FromString(model), full_check=True)
    model = onnx.ModelProto.FromString(model)
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == WRN50_INPUT_NAME and out.name == WRN50_OUTPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    assert out.type.tensor_type.shape.dim[1].dim_value == 512
    props = {p.key: p.value for p in model.metadata_props}
    assert props["anomclust_lite.backbone"] == "wide_resnet50_2.layer2"
    assert props["anomclust_lite.pooled"] == "1"
    assert props["anomclust_lite.stride"] == "8"
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    (pool,) = [n for n in model.graph.node if n.op_type == "AveragePool"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
    assert attrs == {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1}


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 96, 96), (1, 3, 50, 70)])
def test_onnx_matches_numpy_reference(sess, state_dict, shape):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = sess.run([WRN50_OUTPUT_NAME], {WRN50_INPUT_NAME: x})[0]
    want = wrn50_layer2_numpy(state_dict, x)
    n, _, h, w = shape
    assert got.shape == (n, 512, -(-h // 8), -(-w // 8))
    assert got.dtype == np.float32
    assert close(got, want), float(np.abs(got - want).max() / np.abs(want).max())
    assert want.std() > 0.1  # random weights give non-degenerate features


def test_reference_would_catch_a_wrong_bn_eps(state_dict, sess):
    """The comparison is sensitive: a model built with BN eps 1e-3 instead of 1e-5 disagrees."""
    sd = dict(state_dict)
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k] + np.float32(1e-3 - 1e-5)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert not close(sess.run(None, {WRN50_INPUT_NAME: x})[0], wrn50_layer2_numpy(sd, x))


def test_numpy_conv_matches_direct_loops(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    for stride, pad in [(1, 1), (2, 1), (2, 0), (3, 2)]:
        got = reference.conv2d(x, w, stride=stride, pad=pad)
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        ho, wo = (7 + 2 * pad - 3) // stride + 1, (6 + 2 * pad - 3) // stride + 1
        want = np.zeros((2, 4, ho, wo))
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, :, i * stride : i * stride + 3, j * stride : j * stride + 3]
                want[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_numpy_pools_match_torch_semantics():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4) - 8
    avg = reference.pool2d(x, 3, stride=1, pad=1, mode="avg")
    assert avg[0, 0, 0, 0] == (x[0, 0, :2, :2].sum()) / 9  # count_include_pad: corner divides by 9
    mx = reference.pool2d(x, 3, stride=2, pad=1, mode="max")
    np.testing.assert_array_equal(mx[0, 0], [[-3, -1], [5, 7]])  # padding never wins (all-negative corner)


# --------------------------------------------------------------------------- state-dict validation


def test_extra_keys_ignored_and_num_batches_tracked_optional(state_dict, sess):
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    sd["layer3.0.conv1.weight"] = np.zeros((256, 512, 1, 1), np.float32)
    sd["fc.weight"] = np.zeros((1000, 2048), np.float32)
    m = build_wrn50_layer2_onnx(sd)
    x = np.random.default_rng(5).standard_normal((1, 3, 24, 24)).astype(np.float32)
    np.testing.assert_array_equal(session(m).run(None, {WRN50_INPUT_NAME: x})[0], sess.run(None, {WRN50_INPUT_NAME: x})[0])


@pytest.mark.parametrize("key", ["conv1.weight", "layer2.0.downsample.1.running_var", "layer1.2.bn2.bias"])
def test_missing_key_named(state_dict, key):
    sd = dict(state_dict)
    del sd[key]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_wrn50_layer2_onnx(sd)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        wrn50_layer2_numpy(sd, np.zeros((1, 3, 8, 8)))


@pytest.mark.parametrize("key", ["layer2.0.conv2.weight", "bn1.num_batches_tracked", "layer1.0.bn3.weight"])
def test_wrong_shape_named(state_dict, key):
    sd = dict(state_dict)
    sd[key] = np.zeros(sd[key].shape + (1,), np.float32)
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + ".*shape"):
        build_wrn50_layer2_onnx(sd)


def test_bad_values_and_types(state_dict):
    sd = dict(state_dict)
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"].copy()
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*NaN"):
        build_wrn50_layer2_onnx(sd)
    sd = dict(state_dict)
    sd["bn1.running_var"] = -sd["bn1.running_var"]
    with pytest.raises(ValueError, match=r"bn1\.running_var.*negative"):
        build_wrn50_layer2_onnx(sd)
    with pytest.raises(ValueError, match="state_dict"):
        build_wrn50_layer2_onnx([1, 2, 3])
    with pytest.raises(ValueError, match="images"):
        wrn50_layer2_numpy(state_dict, np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="images"):
        wrn50_layer2_numpy(state_dict, np.zeros((3, 8, 8)))


def test_build_needs_no_onnx_package(state_dict, model, monkeypatch):
    """The graph is written by the package's own protobuf writer: importing onnx is never needed."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert build_wrn50_layer2_onnx(state_dict) == model


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, state_dict):
    d = tmp_path_factory.mktemp("ckpt")
    return {"zip": save_zip(state_dict, d / "wrn.pth"), "legacy": save_legacy(state_dict, d / "wrn_legacy.pth")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_checkpoint(checkpoints, caplog):
    path = checkpoints["zip"]
    digest = sha256(path)
    assert verify_checkpoint(path, sha256_prefix=digest[:8]) == digest
    with pytest.raises(ChecksumError, match="95faca4d"):
        verify_checkpoint(path)
    with caplog.at_level(logging.WARNING, logger="anomclust_lite.backbones.wrn50"):
        assert verify_checkpoint(path, allow_unverified=True) == digest
    assert "allow_unverified" in caplog.text
    with pytest.raises(FileNotFoundError, match="nope"):
        verify_checkpoint(path.parent / "nope.pth")
    with pytest.raises(ValueError, match="sha256_prefix"):
        verify_checkpoint(path, sha256_prefix="xyz")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_export_round_trip(fmt, checkpoints, sess, tmp_path):
    out = export_wrn50_onnx(checkpoints[fmt], tmp_path / "sub" / "wrn.onnx", allow_unverified=True)
    assert out == tmp_path / "sub" / "wrn.onnx" and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["wrn.onnx"]  # no temporary files left
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert onnx.load(str(out)).graph.output[0].name == WRN50_OUTPUT_NAME
    assert props["anomclust_lite.checkpoint_sha256"] == sha256(checkpoints[fmt])
    assert props["anomclust_lite.checkpoint_verified"] == "0"
    assert props["anomclust_lite.pooled"] == "1"
    x = np.random.default_rng(9).standard_normal((2, 3, 40, 48)).astype(np.float32)
    np.testing.assert_array_equal(session(out).run(None, {WRN50_INPUT_NAME: x})[0], sess.run(None, {WRN50_INPUT_NAME: x})[0])


def test_export_refuses_unverified_and_unsafe(checkpoints, tmp_path):
    out = tmp_path / "wrn.onnx"
    with pytest.raises(ChecksumError, match="allow_unverified"):
        export_wrn50_onnx(checkpoints["zip"], out)
    assert not out.exists()
    from _torch_writer import Call, Global

    marker = tmp_path / "pwned"
    evil = save_zip({"x": Call(Global("os", "system"), (f"touch '{marker}'",))}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        export_wrn50_onnx(evil, out, allow_unverified=True)
    assert not out.exists() and not marker.exists()


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert user_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ANOMCLUST_CACHE")
    assert user_cache_dir() == tmp_path / "x" / "anomclust_lite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "anomclust_lite"


def test_download_from_file_url(tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(np.random.default_rng(0).bytes(3_000_000))
    calls = []
    dest = download_checkpoint(
        tmp_path / "dl" / "w.pth", url=src.as_uri(), sha256_prefix=sha256(src)[:8],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert dest.read_bytes() == src.read_bytes()
    assert calls[-1] == (3_000_000, 3_000_000) and len(calls) >= 3
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert [p.name for p in dest.parent.iterdir()] == ["w.pth"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(b"not the weights")
    dest = tmp_path / "dl" / "w.pth"
    with pytest.raises(ChecksumError, match="95faca4d"):
        download_checkpoint(dest, url=src.as_uri())
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_failures(tmp_path):
    with pytest.raises(DownloadError, match="could not download") as info:
        download_checkpoint(tmp_path / "w.pth", url=(tmp_path / "absent.pth").as_uri())
    assert isinstance(info.value, OSError)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="url"):
        download_checkpoint(tmp_path / "w.pth", url="ftp://example.com/w.pth")
    with pytest.raises(ValueError, match="progress"):
        download_checkpoint(tmp_path / "w.pth", url=(tmp_path / "a").as_uri(), progress=3)


# --------------------------------------------------------------------------- CLI


def load_tool():
    spec = importlib.util.spec_from_file_location("export_wrn50_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_unverified_goes_to_out_only(checkpoints, tmp_path, capsys):
    """Issue 19: an --allow-unverified export is written where --out says and nowhere else."""
    tool = load_tool()
    out = tmp_path / "m.onnx"
    assert tool.main(["--checkpoint", str(checkpoints["zip"]), "--out", str(out), "--allow-unverified"]) == 0
    assert out.is_file()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.onnx"))
    printed = capsys.readouterr().out
    assert "wrote" in printed and "not cached" in printed
    out2 = tmp_path / "m2.onnx"
    assert tool.main(["--checkpoint", str(checkpoints["legacy"]), "--out", str(out2), "--allow-unverified", "--no-cache"]) == 0
    assert out2.is_file()


def test_cli_uses_cached_checkpoint_when_none_given(checkpoints, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WRN50_CHECKPOINT_FILENAME).write_bytes(checkpoints["legacy"].read_bytes())
    tool = load_tool()
    assert tool.main(["--out", str(tmp_path / "m.onnx"), "--allow-unverified", "--no-cache"]) == 0
    assert (tmp_path / "m.onnx").is_file()


def test_cli_user_errors_exit_1(checkpoints, tmp_path, capsys):
    tool = load_tool()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage")
    cases = [
        ["--checkpoint", str(garbage), "--out", str(tmp_path / "a.onnx"), "--allow-unverified"],
        ["--checkpoint", str(checkpoints["zip"]), "--out", str(tmp_path / "b.onnx")],  # checksum mismatch
        ["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "c.onnx")],
    ]
    for argv in cases:
        assert tool.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not any(tmp_path.glob("*.onnx"))


def test_cli_usage_errors_exit_2(capsys):
    tool = load_tool()
    assert tool.main([]) == 2
    assert tool.main(["--out", "x.onnx", "--bogus"]) == 2
    assert "usage" in capsys.readouterr().err
    assert tool.main(["--help"]) == 0


def test_cli_script_runs_as_program(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "--out" in proc.stderr

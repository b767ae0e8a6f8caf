"""Tests for the torch-free, data-only checkpoint reader."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _torch_writer import (
    BFloat16,
    Call,
    Global,
    ODict,
    Parameter,
    Persistent,
    TensorView,
    dump_pickle,
    legacy_view_file,
    save_legacy,
    save_zip,
)
from anomclust_lite.backbones.torch_checkpoint import UnsafeCheckpointError, load_state_dict
from anomclust_lite.backbones.wrn50 import random_wrn50_state_dict

FORMATS = ["zip", "legacy"]


def save(fmt: str, obj, path: Path, **kw) -> Path:
    return (save_zip if fmt == "zip" else save_legacy)(obj, path, **kw)


def assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k in want:
        w = np.asarray(want[k])
        assert got[k].shape == w.shape, k
        assert got[k].dtype == w.dtype, k
        assert got[k].flags.c_contiguous and got[k].dtype.isnative
        np.testing.assert_array_equal(got[k], w, err_msg=k)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrn50_state_dict_round_trip(fmt, tmp_path):
    sd = random_wrn50_state_dict(seed=3)
    path = save(fmt, sd, tmp_path / "wrn.pth")
    got = load_state_dict(path)
    assert_same(got, sd)
    assert got["bn1.num_batches_tracked"].shape == ()


DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_storage_dtypes(fmt, tmp_path, rng):
    want = {}
    for dt in DTYPES:
        raw = rng.integers(-100, 100, size=(2, 3, 4))
        want[np.dtype(dt).name] = (raw > 0) if dt is np.bool_ else raw.astype(dt)
    want["empty"] = np.zeros((0, 5), dtype=np.float32)
    want["scalar"] = np.array(2.5, dtype=np.float64)
    got = load_state_dict(save(fmt, want, tmp_path / "d.pth"))
    assert_same(got, want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bfloat16_widened_to_float32(fmt, tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [0.0, -0.0, 65280.0]], dtype=np.float32)  # exact in bf16
    inexact = np.array([1.0 + 2**-10], dtype=np.float32)  # truncated to 1.0 in bf16
    got = load_state_dict(save(fmt, {"w": BFloat16(values), "t": BFloat16(inexact)}, tmp_path / "b.pth"))
    assert got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"], values)
    np.testing.assert_array_equal(got["t"], [1.0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_shared_storage_offsets_and_strides(fmt, tmp_path):
    base = np.arange(30, dtype=np.float32)
    obj = {
        "transposed": TensorView(base, 2, (4, 3), (1, 4)),  # non-contiguous view
        "tail": TensorView(base, 20, (10,), (1,)),
        "every_other": TensorView(base, 1, (2, 3), (12, 2)),
        "two_rows": TensorView(base, 5, (2, 2), (3, 1)),
    }
    got = load_state_dict(save(fmt, obj, tmp_path / "v.pth"))
    np.testing.assert_array_equal(got["transposed"], base[2:14].reshape(3, 4).T)
    np.testing.assert_array_equal(got["tail"], base[20:])
    np.testing.assert_array_equal(got["every_other"], np.array([[1, 3, 5], [13, 15, 17]], dtype=np.float32))
    np.testing.assert_array_equal(got["two_rows"], np.array([[5, 6], [8, 9]], dtype=np.float32))
    for arr in got.values():
        assert arr.flags.c_contiguous and arr.flags.owndata


def test_legacy_storage_view(tmp_path):
    root = np.arange(10, dtype=np.int64)
    path = legacy_view_file(tmp_path / "view.pth", root, view_offset=4, view_size=5, tensor_offset=1, size=(2, 2), stride=(2, 1))
    np.testing.assert_array_equal(load_state_dict(path)["t"], [[5, 6], [7, 8]])


def test_legacy_view_outside_root_is_refused(tmp_path):
    root = np.arange(10, dtype=np.int64)
    path = legacy_view_file(tmp_path / "view.pth", root, view_offset=8, view_size=5, tensor_offset=0, size=(1,), stride=(1,))
    with pytest.raises(ValueError, match="storage view"):
        load_state_dict(path)


def test_zip_big_endian_and_custom_archive_name(tmp_path, rng):
    want = {"a": rng.standard_normal((3, 5)).astype(np.float32), "n": np.array([1, 2**40], dtype=np.int64)}
    got = load_state_dict(save_zip(want, tmp_path / "be.pth", byteorder="big", archive="my_model"))
    assert_same(got, want)


def test_zip_without_byteorder_record_is_little_endian(tmp_path, rng):
    want = {"a": rng.standard_normal(7).astype(np.float64)}
    assert_same(load_state_dict(save_zip(want, tmp_path / "x.pth", byteorder=None)), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_cuda_storages_and_rebuild_v1(fmt, tmp_path, rng):
    a = rng.standard_normal((2, 2)).astype(np.float32)
    for kw in ({"storage_module": "torch.cuda", "location": "cuda:0"}, {"rebuild": "v1"}):
        got = load_state_dict(save(fmt, {"p": Parameter(a)}, tmp_path / "p.pth", **kw))
        np.testing.assert_array_equal(got["p"], a)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_state_dict_is_unwrapped(fmt, tmp_path, rng):
    inner = {"w": rng.standard_normal(4).astype(np.float32)}
    obj = {"state_dict": inner, "epoch": 7, "arch": "wide_resnet50_2"}
    assert_same(load_state_dict(save(fmt, obj, tmp_path / "n.pth")), inner)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    dtype=st.sampled_from(DTYPES),
    fmt=st.sampled_from(FORMATS),
    seed=st.integers(0, 2**16),
)
def test_random_tensors_round_trip(tmp_path_factory, shape, dtype, fmt, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(-50, 50, size=tuple(shape))
    arr = np.asarray(raw > 0) if dtype is np.bool_ else raw.astype(dtype)
    path = save(fmt, {"x": arr, "y": arr.T.copy()}, tmp_path_factory.mktemp("h") / "r.pth")
    assert_same(load_state_dict(path), {"x": arr, "y": arr.T.copy()})


# --------------------------------------------------------------------------- malicious files


def payloads(marker: Path):
    return {
        "os.system": Call(Global("os", "system"), (f"touch '{marker}'",)),
        "posix.system": Call(Global("posix", "system"), (f"touch '{marker}'",)),
        "builtins.eval": Call(Global("builtins", "eval"), (f"open({str(marker)!r}, 'w').close()",)),
        "__builtin__.exec": Call(Global("__builtin__", "exec"), (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.Popen": Call(Global("subprocess", "Popen"), (["touch", str(marker)],)),
    }


def test_payloads_would_run_under_plain_pickle(tmp_path):
    """Sanity check of the test itself: the payload really creates the marker when unpickled naively."""
    marker = tmp_path / "pwned_plain"
    pickle.loads(dump_pickle(payloads(marker)["builtins.eval"]))  # noqa: S301 - deliberate, test-only
    assert marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval", "__builtin__.exec", "subprocess.Popen"])
def test_malicious_global_refused_and_not_executed(fmt, name, tmp_path):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[name]
    # Hide the payload among real tensors, as an attacker would.
    obj = {"conv.weight": np.ones((2, 2), np.float32), "evil": payload}
    path = save(fmt, obj, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=f"refusing to load global '{name}' from checkpoint"):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_global_in_legacy_magic_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = save_legacy({}, tmp_path / "evil.pth", magic_pickle=dump_pickle(payloads(marker)["os.system"]))
    with pytest.raises(UnsafeCheckpointError, match="'os.system'"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_storage_type_refused(fmt, tmp_path):
    pid = ("storage", Global("os", "system"), "0", "cpu", 1) + ((None,) if fmt == "legacy" else ())
    obj = ODict([("t", Call(Global("torch._utils", "_rebuild_tensor_v2"), (Persistent(pid), 0, (1,), (1,), False, ODict([]))))])
    path = save(fmt, None, tmp_path / "e.pth", raw_pickle=dump_pickle(obj))
    with pytest.raises(UnsafeCheckpointError, match="'os.system'"):
        load_state_dict(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_arbitrary_class_and_module_persistent_id_refused(fmt, tmp_path):
    cls = ODict([("x", Call(Global("torch.nn.modules.conv", "Conv2d"), ()))])
    path = save(fmt, None, tmp_path / "c.pth", raw_pickle=dump_pickle(cls))
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.conv.Conv2d"):
        load_state_dict(path)
    module_pid = ODict([("m", Persistent(("module", "x", "file.py", "source")))])
    path = save(fmt, None, tmp_path / "m.pth", raw_pickle=dump_pickle(module_pid))
    with pytest.raises(UnsafeCheckpointError, match="module"):
        load_state_dict(path)


def test_build_on_storage_objects_refused(tmp_path):
    """A crafted BUILD opcode must not rewrite the reader's stand-in objects."""
    pid = Persistent(("storage", Global("torch", "FloatStorage"), "0", "cpu", 4))
    # The storage stand-in, then a dict state and the BUILD opcode applied to it.
    evil = bytearray(b"\x80\x02")
    evil += dump_pickle(pid)[2:-1] + dump_pickle({"numel": 2**40})[2:-1] + b"b."
    path = save_zip(None, tmp_path / "b.pth", raw_pickle=bytes(evil))
    with pytest.raises(UnsafeCheckpointError, match="refusing to set state"):
        load_state_dict(path)


# --------------------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict(tmp_path / "nope.pth")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="path"):
        load_state_dict(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world, not a checkpoint", bytes(range(256)) * 4, b"\x80\x02K\x05."],
    ids=["empty", "text", "binary", "plain-pickle-int"],
)
def test_not_a_checkpoint(content, tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="x.pth"):
        load_state_dict(path)


def test_npz_zip_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="data.pkl"):
        load_state_dict(tmp_path / "a.npz")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.9, 0.999])
def test_truncated_checkpoint(fmt, fraction, tmp_path, rng):
    sd = {"a": rng.standard_normal((20, 20)).astype(np.float32), "b": np.arange(50, dtype=np.int64)}
    data = save(fmt, sd, tmp_path / "full.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(ValueError, match="cut.pth"):
        load_state_dict(cut)


@pytest.mark.parametrize("fmt", FORMATS)
def test_view_outside_storage_refused(fmt, tmp_path):
    base = np.arange(6, dtype=np.float32)
    path = save(fmt, {"t": TensorView(base, 2, (3, 2), (2, 1))}, tmp_path / "oob.pth")  # reaches element 7
    with pytest.raises(ValueError, match="reaches element 7"):
        load_state_dict(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_memory_amplification_refused(fmt, tmp_path):
    """Tiny files must not expand into huge arrays via stride-0 views or many views of one storage."""
    base = np.arange(4, dtype=np.float64)
    path = save(fmt, {"t": TensorView(base, 0, (10**6, 10**6), (0, 0))}, tmp_path / "bomb.pth")
    with pytest.raises(ValueError, match="overlapping views"):
        load_state_dict(path)
    big = np.zeros(1 << 16, dtype=np.float64)  # 512 KiB
    many = {f"t{i}": TensorView(big, 0, big.shape, (1,)) for i in range(20)}
    with pytest.raises(ValueError, match="exceed 4x"):
        load_state_dict(save(fmt, many, tmp_path / "many.pth"))


def test_zip_storage_record_size_mismatch(tmp_path):
    path = save_zip({"a": np.ones(4, np.float32)}, tmp_path / "s.pth")
    with zipfile.ZipFile(path) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    records["archive/data/0"] = records["archive/data/0"][:8]
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in records.items():
            zf.writestr(n, b)
    with pytest.raises(ValueError, match="bytes"):
        load_state_dict(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_tensor_entries_and_non_dict_top_level(fmt, tmp_path):
    path = save(fmt, {"w": np.ones(2, np.float32), "epoch": 3}, tmp_path / "e.pth")
    with pytest.raises(ValueError, match="'epoch'"):
        load_state_dict(path)
    path = save(fmt, None, tmp_path / "l.pth", raw_pickle=dump_pickle([1, 2, 3]))
    with pytest.raises(ValueError, match="list"):
        load_state_dict(path)


def test_wrong_argument_count_is_value_error(tmp_path):
    bad = ODict([("t", Call(Global("torch._utils", "_rebuild_tensor_v2"), (1,)))])
    path = save_zip(None, tmp_path / "a.pth", raw_pickle=dump_pickle(bad))
    with pytest.raises(ValueError, match="a.pth"):
        load_state_dict(path)

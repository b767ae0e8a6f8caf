"""Hostile model.npz files (issue 14): zip bombs and inconsistent fields, refused before use."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from anomclust_lite.estimator import model_io
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from anomclust_lite.files.npz import NpzRefused, read_npz_checked


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    bags = rng.normal(size=(8, 5, 4)).astype(np.float32)
    bags /= np.linalg.norm(bags, axis=2, keepdims=True)
    path = tmp_path_factory.mktemp("m") / "model.npz"
    AnomalyClusterer(2).fit(bags).save(path)
    return path


def _arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _write(path: Path, arrays: dict, extra: "dict | None" = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _with_header(arrays: dict, **changes) -> dict:
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    return {**arrays, "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}


def _refused(path: Path, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        AnomalyClusterer.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(model_io.CORRUPT)
    return message


def test_good_model_loads(good):
    assert AnomalyClusterer.load(good).labels_.shape == (8,)


def test_extra_member_is_refused_before_it_is_decompressed(tmp_path, good, monkeypatch):
    path = _write(tmp_path / "m.npz", _arrays(good), extra={"bomb.npy": b"\0" * (8 << 20)})
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda *a: pytest.fail("decompressed"))
    _refused(path, "unexpected: 'bomb.npy'")


def test_declared_decompressed_total_is_capped(tmp_path, good):
    arrays = _arrays(good)
    arrays["reference"] = np.zeros((2, 5, 4 * 500_000), np.float16)  # 40 MB of zeros, ~40 kB compressed
    path = _write(tmp_path / "m.npz", arrays)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(NpzRefused, match="declare .* bytes once decompressed"):
        read_npz_checked(path, model_io._DTYPES, max_bytes=8 << 20)


def test_npy_header_declaring_a_huge_shape_is_refused_before_allocation(tmp_path, good):
    arrays = _arrays(good)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f2", "fortran_order": False, "shape": (10**6, 10**6, 512)})
    path = tmp_path / "m.npz"
    _write(path, {k: v for k, v in arrays.items() if k != "reference"}, extra={"reference.npy": buf.getvalue()})
    _refused(path, "member 'reference' declares shape")


@pytest.mark.parametrize("name,array", [("labels", np.zeros(8, np.float64)), ("reference", np.zeros((2, 5, 4), object))])
def test_wrong_member_dtype_is_refused(tmp_path, good, name, array):
    arrays = _arrays(good)
    if array.dtype == object:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        path = _write(tmp_path / "m.npz", {k: v for k, v in arrays.items() if k != name}, extra={f"{name}.npy": buf.getvalue() + b"\0" * 8})
    else:
        path = _write(tmp_path / "m.npz", {**arrays, name: array})
    _refused(path, f"member '{name}' has dtype")


def test_deeply_nested_header_is_a_one_line_error(tmp_path, good):
    text = ("[" * 200_000 + "]" * 200_000).encode()
    arrays = {**_arrays(good), "header": np.frombuffer(text, dtype=np.uint8)}
    _refused(_write(tmp_path / "m.npz", arrays), "header")


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda a: _with_header(a, n_patches=7), "reference has 5 patches per image but n_patches is 7"),
        (lambda a: _with_header(a, n_patches=10**12), "n_patches"),
        (lambda a: _with_header(a, reference_kind="normal-patches"), "reference_kind 'normal-patches' does not match"),
        (lambda a: _with_header(a, reference_kind="weird"), "reference_kind 'weird'"),
        (lambda a: _with_header(a, new_type_threshold=-1.0), "new_type_threshold"),
        (lambda a: {**a, "fitted_distances": np.full(8, np.nan)}, "fitted_distances has NaN"),
        (lambda a: {**a, "reference": np.full(a["reference"].shape, np.inf, np.float16)}, "reference has NaN or inf"),
        (lambda a: {**a, "reference": np.zeros((9,) + a["reference"].shape[1:], np.float16)}, "more than the 8 fitted"),
        (lambda a: {**a, "novelty_reference": np.full((1, 3, 4), np.nan, np.float16)}, "novelty_reference is empty or has NaN"),
        (lambda a: {**a, "novelty_reference": np.zeros((1, 3, 5), np.float16)}, r"novelty_reference has shape \(1, 3, 5\)"),
    ],
)
def test_inconsistent_fields_are_refused_naming_the_field(tmp_path, good, change, field):
    path = _write(tmp_path / "m.npz", change(_arrays(good)))
    _refused(path, field)


def test_model_file_that_is_a_fifo_is_refused(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs")
    path = tmp_path / "m.npz"
    os.mkfifo(path)
    with pytest.raises((ValueError, FileNotFoundError)):
        AnomalyClusterer.load(path)


# -- torch checkpoints: a storage larger than the file is refused before allocation --


def test_checkpoint_record_declaring_more_than_the_file_is_refused_before_decompressing(tmp_path, monkeypatch):
    from anomclust_lite.backbones.torch_checkpoint import load_state_dict

    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/data/0", b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 kB
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a, **k: pytest.fail("decompressed"))
    with pytest.raises(ValueError, match="declares .* bytes, more than the whole file") as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)


def test_checkpoint_that_is_a_fifo_is_refused(tmp_path):
    import os

    from anomclust_lite.backbones.torch_checkpoint import load_state_dict

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs")
    path = tmp_path / "c.pth"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file|FIFO"):
        load_state_dict(path)


def test_deeply_nested_checkpoint_pickle_is_a_one_line_error(tmp_path):
    from anomclust_lite.backbones.torch_checkpoint import load_state_dict

    depth = 200_000
    nested = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."  # [[[...]]] without recursion to build
    path = tmp_path / "deep.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", nested)
    with pytest.raises(ValueError) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)


def test_deeply_nested_pickle_in_a_dict_is_a_one_line_error(tmp_path):
    from anomclust_lite.backbones.torch_checkpoint import load_state_dict

    depth = 200_000
    # {"w": [[[...]]]}: the walk over the loaded object must not overflow the stack
    nested = b"\x80\x02}X\x01\x00\x00\x00w" + b"]" * depth + b"a" * (depth - 1) + b"s."
    path = tmp_path / "deep.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", nested)
    with pytest.raises(ValueError) as info:
        load_state_dict(path)
    assert "\n" not in str(info.value)

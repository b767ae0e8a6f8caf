"""The ONNX model that runs is the one that was checked (issue 14, time of check vs time of use).

onnxruntime is given the model's bytes and its external tensors as arrays,
read once by the library; a file swapped afterwards (the model, its external
data, or a link to a file outside the folder) changes nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
from _tiny_onnx import conv_weights, make_external_model, make_model  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import onnx  # noqa: E402
from anomclust_lite.features.onnx_session import BackboneSession  # noqa: E402

KWARGS = dict(output=None, resize=32, crop=32, device="cpu", threads=1, batch_size=1)
IMAGE = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)


def _external(folder: Path, location: str = "w.bin", *, length_delta: int = 0, seed: int = 0) -> Path:
    """A tiny model whose conv weights live in ``folder/location``."""
    return make_external_model(folder, location, folder / location, length_delta=length_delta, seed=seed)


@pytest.fixture
def swap_before_onnxruntime(monkeypatch):
    """Run ``swap()`` just before onnxruntime builds the session; record what it was given."""
    real = ort.InferenceSession
    given = []

    def install(swap):
        def session(model, *args, **kwargs):
            swap()
            given.append(model)
            return real(model, *args, **kwargs)

        monkeypatch.setattr(ort, "InferenceSession", session)
        return given

    return install


def _features(session: BackboneSession) -> np.ndarray:
    return session.run(IMAGE)


def test_model_file_swapped_after_the_check_is_not_what_runs(tmp_path, swap_before_onnxruntime):
    path = make_model(tmp_path / "m.onnx", channels=4)
    other = make_model(tmp_path / "other.onnx", channels=8, seed=5)
    checked = path.read_bytes()
    given = swap_before_onnxruntime(lambda: os.replace(other, path))
    session = BackboneSession(path, **KWARGS)
    assert isinstance(given[0], bytes) and given[0] == checked
    assert session.feature_map_shape()[0] == 4  # the swapped-in model has 8 channels
    assert session.model_hash == hashlib.sha256(checked).hexdigest()


def test_external_data_swapped_after_the_check_is_not_what_runs(tmp_path, swap_before_onnxruntime):
    path = _external(tmp_path / "m")
    reference = BackboneSession(make_model(tmp_path / "inline.onnx"), **KWARGS)
    outside = tmp_path / "secret.bin"
    outside.write_bytes(conv_weights(seed=9).tobytes())

    def swap():
        (tmp_path / "m" / "w.bin").unlink()
        (tmp_path / "m" / "w.bin").symlink_to(outside)

    swap_before_onnxruntime(swap)
    session = BackboneSession(path, **KWARGS)
    np.testing.assert_array_equal(_features(session), _features(reference))


def test_external_data_link_swapped_in_while_opening_is_refused(tmp_path, monkeypatch):
    """The location is checked again with the file open: a link to a file outside, swapped in, is refused."""
    from anomclust_lite.features import onnx_external

    path = _external(tmp_path / "m")
    outside = tmp_path / "secret.bin"
    outside.write_bytes(conv_weights(seed=9).tobytes())
    real_open = onnx_external.open_regular

    def open_then_swap(target, max_bytes):
        (tmp_path / "m" / "w.bin").unlink()
        (tmp_path / "m" / "w.bin").symlink_to(outside)
        return real_open(target, max_bytes)

    monkeypatch.setattr(onnx_external, "open_regular", open_then_swap)
    with pytest.raises(ValueError, match="leads out of the model's folder"):
        BackboneSession(path, **KWARGS)


def test_external_data_replaced_by_another_file_while_opening_is_refused(tmp_path, monkeypatch):
    from anomclust_lite.features import onnx_external

    path = _external(tmp_path / "m")
    real_open = onnx_external.open_regular

    def open_then_replace(target, max_bytes):
        fh = real_open(target, max_bytes)
        replacement = tmp_path / "m" / "new.bin"
        replacement.write_bytes(conv_weights(seed=9).tobytes())
        os.replace(replacement, target)
        return fh

    monkeypatch.setattr(onnx_external, "open_regular", open_then_replace)
    with pytest.raises(ValueError, match="replaced while it was opened"):
        BackboneSession(path, **KWARGS)


def test_external_data_runs_and_its_bytes_key_the_model_hash(tmp_path):
    inline = BackboneSession(make_model(tmp_path / "inline.onnx"), **KWARGS)
    first = BackboneSession(_external(tmp_path / "a"), **KWARGS)
    np.testing.assert_array_equal(_features(first), _features(inline))
    changed = _external(tmp_path / "b")
    (tmp_path / "b" / "w.bin").write_bytes(conv_weights(seed=3).tobytes())
    second = BackboneSession(changed, **KWARGS)
    assert changed.read_bytes() == (tmp_path / "a" / "model.onnx").read_bytes()  # same model file ...
    assert second.model_hash != first.model_hash  # ... other weights: another hash (the feature cache key)
    assert not np.array_equal(_features(second), _features(first))


def test_external_tensor_that_does_not_fit_its_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs 3072 bytes .*length 3076"):
        BackboneSession(_external(tmp_path / "m", length_delta=4), **KWARGS)


def test_external_data_outside_the_main_initializers_is_refused(tmp_path, monkeypatch):
    """A Constant node's external tensor would be opened by onnxruntime by name: refused before it runs."""
    (tmp_path / "c.bin").write_bytes(np.float32(2.0).tobytes())
    tensor = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "c.bin"
    model = onnx.load(str(make_model(tmp_path / "base.onnx")))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=tensor))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: pytest.fail("onnxruntime was given the model"))
    with pytest.raises(ValueError, match="outside the main graph's initializers"):
        BackboneSession(path, **KWARGS)


@pytest.mark.parametrize("named", ["record", "embedded"])
def test_backbone_swapped_after_its_provenance_check_is_refused(tmp_path, monkeypatch, named):
    """A built backbone's record (or the embedded file's name) holds the SHA-256 checked; other bytes are refused."""
    from anomclust_lite.backbones.store import Backbone
    from anomclust_lite.features import extractor as extractor_module

    checked = make_model(tmp_path / "checked.onnx")
    digest = hashlib.sha256(checked.read_bytes()).hexdigest()
    path = tmp_path / (f"resnet50v2_layer2-{digest[:16]}.onnx" if named == "embedded" else "mine.onnx")
    make_model(path, channels=8, seed=3)  # what is on disk by the time the model is read
    info = Backbone(name="resnet50v2" if named == "embedded" else "mine", state="ready", description="",
                    origin="", path=path, record={"model_sha256": digest} if named == "record" else {})
    monkeypatch.setattr(extractor_module, "resolve_backbone", lambda model, backbone=None: info)
    with pytest.raises(ValueError, match="changed after it was checked"):
        extractor_module.Extractor(backbone=info.name, resize=32, crop=32)
    path.write_bytes(checked.read_bytes())  # the checked bytes: accepted
    assert extractor_module.Extractor(backbone=info.name, resize=32, crop=32).dim == 4

"""Hostile ONNX models (issue 14): external data leading out, FIFOs, wrong or failing outputs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
from _tiny_onnx import make_external_model, make_model  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from anomclust_lite.features.extractor import Extractor  # noqa: E402
from anomclust_lite.features.onnx_external import external_data_locations  # noqa: E402
from anomclust_lite.features.onnx_session import ModelRunError  # noqa: E402

SMALL = dict(resize=32, crop=32)


def _with_external_weights(folder: Path, location: str, payload_at: "Path | None" = None) -> Path:
    """A tiny model whose conv weights live in external data at ``location`` (written to payload_at)."""
    return make_external_model(folder, location, payload_at)


@pytest.fixture
def no_onnxruntime_session(monkeypatch):
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime was given the model")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def test_external_data_inside_the_folder_is_accepted(tmp_path):
    path = _with_external_weights(tmp_path / "m", "w.bin", tmp_path / "m" / "w.bin")
    assert Extractor(path, **SMALL).dim == 4


@pytest.mark.parametrize(
    "location,expected",
    [("/etc/passwd", "absolute"), ("../secret.bin", "'..'"), ("sub/../../secret.bin", "'..'"), ("missing.bin", "not a regular file")],
)
def test_external_data_outside_the_folder_is_refused_before_onnxruntime(
    tmp_path, no_onnxruntime_session, location, expected
):
    path = _with_external_weights(tmp_path / "m", location, tmp_path / "secret.bin")
    with pytest.raises(ValueError, match=f"external data at .*{expected}") as info:
        Extractor(path, **SMALL)
    assert "\n" not in str(info.value)


def test_external_data_link_leading_out_is_refused(tmp_path, no_onnxruntime_session):
    path = _with_external_weights(tmp_path / "m", "w.bin", tmp_path / "outside" / "w.bin")
    (tmp_path / "m" / "w.bin").symlink_to(tmp_path / "outside" / "w.bin")
    with pytest.raises(ValueError, match="leads out of the model's folder"):
        Extractor(path, **SMALL)


def test_external_data_in_a_nested_subgraph_attribute_is_found():
    tensor = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "/etc/shadow"
    const = helper.make_node("Constant", [], ["c"], value=tensor)
    inner = helper.make_graph([const], "inner", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor_value_info("b", TensorProto.BOOL, [])
    node = helper.make_node("If", ["b"], ["y"], then_branch=inner, else_branch=inner)
    graph = helper.make_graph([node], "g", [cond], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    assert external_data_locations(model.SerializeToString()) == ["/etc/shadow", "/etc/shadow"]


def test_garbage_model_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError) as info:
        Extractor(path, **SMALL)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_as_model_is_refused_without_blocking(tmp_path):
    path = tmp_path / "m.onnx"
    os.mkfifo(path)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_raises(lambda: Extractor(path, **SMALL))), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "opening the model blocked"
    assert "FIFO" in errors[0] or "is not a file" in errors[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_model_swapped_for_a_fifo_after_resolution_is_refused(tmp_path):
    from anomclust_lite.features.onnx_session import BackboneSession

    path = tmp_path / "m.onnx"
    os.mkfifo(path)
    kwargs = dict(output=None, resize=32, crop=32, device="cpu", threads=1, batch_size=1)
    with pytest.raises(ValueError, match="FIFO"):
        BackboneSession(path, **kwargs)


def _raises(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    return "no error"


# -- outputs are checked, failures name the image and the model --------------


def _images(folder: Path, n: int = 3):
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.new("RGB", (40, 40), (i * 40, 10, 10)).save(p)
        paths.append(p)
    return paths


def test_declared_output_shape_is_not_trusted(tmp_path):
    ext = Extractor(make_model(tmp_path / "m.onnx", size=32), **SMALL)
    session = ext.backbone.ort_session

    class Declared:
        def __init__(self, out):
            self.name, self.shape = out.name, [1, 10**9, 10**9, 4]

    class Lying:  # onnxruntime itself reports the inferred shape; a model could declare anything
        def __getattr__(self, name):
            return getattr(session, name)

        def get_outputs(self):
            return [Declared(o) for o in session.get_outputs()]

    ext.backbone.ort_session = Lying()
    ext.backbone._feature_shape = None
    with pytest.raises(ModelRunError, match="declares shape") as info:
        ext.dim
    assert "\n" not in str(info.value)


def test_runtime_failure_names_the_image_and_the_model(tmp_path):
    paths = _images(tmp_path / "imgs")
    ext = Extractor(make_model(tmp_path / "m.onnx"), **SMALL)
    ext.dim  # the first run (on zeros) succeeds
    session = ext.backbone.ort_session
    real_run = session.run

    class FakeSession:
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, names, feeds):
            if feeds["x"].any() and feeds["x"].shape[0] == 1:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : boom\nsecond line")
            if feeds["x"].shape[0] > 1:
                raise RuntimeError("batch failed")
            return real_run(names, feeds)

    ext.backbone.ort_session = FakeSession()
    result = ext.extract_all(paths, on_error="skip") if hasattr(ext, "extract_all") else None
    if result is None:
        pytest.skip("no extract_all")
    reasons = [str(f) for f in result.failures]
    assert reasons and all("\n" not in r and "m.onnx" in r and "failed at run time" in r for r in reasons)
    assert len(result.paths) + len(result.failures) == len(paths)


def test_output_of_another_shape_for_one_image_is_refused(tmp_path):
    paths = _images(tmp_path / "imgs", 2)
    ext = Extractor(make_model(tmp_path / "m.onnx"), batch_size=1, **SMALL)
    ext.dim
    session = ext.backbone.ort_session

    class Shifty:
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, names, feeds):
            return [np.ones((feeds["x"].shape[0], 4, 2, 2), np.float32)]

    ext.backbone.ort_session = Shifty()
    result = ext.extract_all(paths, on_error="skip")
    assert len(result.failures) == 2
    assert all("on the first run" in str(f) for f in result.failures)

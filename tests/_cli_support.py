"""Shared scaffolding of the command-line tests (tests/test_cli.py, tests/test_robustness.py).

A tiny ONNX model (one 8x8 stride-8 convolution), a folder of synthetic part
images of three types (``PER_CLASS`` each, ``N_IMAGES`` in all), the pytest
fixtures that build them once per test module, and helpers that run the CLI
in-process and read or check what it wrote. Skips the importing module when
``onnx`` or ``onnxruntime`` is missing.

Import what a test module uses explicitly, fixtures included: pytest finds a
fixture among the test module's names. The fixture functions are called
``fixture_<name>`` and registered as ``<name>`` (``model_path``,
``base_folder``, ``folder``), so that a test's argument does not shadow the
imported name::

    from _cli_support import fixture_folder, fixture_model_path  # noqa: F401 (fixtures)
    from _cli_support import fixture_base_folder  # noqa: F401 (needed by folder)
    from _cli_support import N_IMAGES, model_args, run

    def test_k(capsys, folder, model_path, tmp_path):
        rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o")
        assert rc == 0, err
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomclust_lite.cli.main import main

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from _tiny_onnx import conv_weights  # noqa: E402

__all__ = [
    "CLASSES",
    "PER_CLASS",
    "N_IMAGES",
    "make_onnx",
    "draw_image",
    "make_folder",
    "fixture_model_path",
    "fixture_base_folder",
    "fixture_folder",
    "model_args",
    "run",
    "read_csv",
    "assert_one_error_line",
]

CLASSES = ("good", "red_spot", "green_bar")
PER_CLASS = 4
N_IMAGES = len(CLASSES) * PER_CLASS


# ---------------------------------------------------------------- model and images


def make_onnx(path: Path, *, channels: int = 16, seed: int = 0) -> Path:
    """One 8x8 stride-8 convolution: (batch, 3, H, W) -> (batch, channels, H/8, W/8).

    The weights are ``_tiny_onnx.conv_weights(channels, seed)``.
    """
    w = conv_weights(channels, seed)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["feat"], kernel_shape=[8, 8], strides=[8, 8])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", channels, "gh", "gw"])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def draw_image(cls: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Grey noise; 'red_spot' adds a red disc, 'green_bar' a short green bar."""
    base = np.clip(128 + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(base)
    draw = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(8, size - 24, 2))
    if cls == "red_spot":
        draw.ellipse([x, y, x + 14, y + 14], fill=(220, 30, 30))
    elif cls == "green_bar":
        draw.rectangle([x, y, x + 20, y + 7], fill=(30, 200, 30))
    return im


def make_folder(root: Path, seed: int = 0, per_class: int = PER_CLASS) -> Path:
    """``root/<type>/000.png ...``: ``per_class`` images of each of the ``CLASSES``."""
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_image(cls, rng).save(root / cls / f"{i:03d}.png")
    return root


def make_normal_folder(root: Path, n: int, seed: int) -> Path:
    """``root/n0.png ...``: ``n`` defect-free images (a ``--normal`` folder)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        draw_image("good", rng).save(root / f"n{i}.png")
    return root


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", name="model_path")
def fixture_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``make_onnx`` model with its defaults."""
    return make_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module", name="base_folder")
def fixture_base_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only use only: the ``N_IMAGES``-image folder of ``make_folder``."""
    return make_folder(tmp_path_factory.mktemp("data") / "parts")


@pytest.fixture(name="folder")
def fixture_folder(tmp_path: Path, base_folder: Path) -> Path:
    """A private copy of ``base_folder`` that a test may change."""
    dst = tmp_path / "parts"
    shutil.copytree(base_folder, dst)
    return dst


# ---------------------------------------------------------------- running the CLI and checking its output


def model_args(model_path: Path) -> List[str]:
    """The CLI options for ``model_path`` on the 64 x 64 images: no resize, no crop."""
    return ["--model", str(model_path), "--resize", "64", "--crop", "64"]


def run(capsys: pytest.CaptureFixture, *argv: object) -> Tuple[int, str, str]:
    """``anomclust_lite.cli.main.main`` on ``argv`` (as strings): exit status, stdout, stderr."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def read_csv(path: Path) -> List[Dict[str, str]]:
    """The rows of a CSV file with a header line."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_one_error_line(err: str, *needles: str) -> None:
    """The error is one line (after any progress lines), without a traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("anomclust-lite: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in errors[0], err

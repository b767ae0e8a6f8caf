"""Robustness of the command-line tool (issue 4): bad input, nothing lost, bounded memory, determinism.

Every bad input goes through ``anomclust_lite.cli.main.main`` and must give either
exit status 1 with ONE line ``anomclust-lite: error: <file>: <problem>`` on
stderr (no traceback), or a skip with a warning per file and a count on
stdout (the policy of ``--help``). Interruptions run the real program in a
subprocess on a model slowed down with a chain of matrix products.

Covered elsewhere, not repeated here: an empty folder, a one-image folder, a
missing folder and ``--k`` above N (tests/test_cli.py::
test_missing_and_empty_and_single_image_folders, test_k_larger_than_n); a
successful run with a non-UTF-8 file name (test_cli.py::
test_non_utf8_file_name); an output folder under a file or read-only
(test_cli.py::test_unwritable_out, test_read_only_out); a missing --model
(test_cli.py::test_missing_model_is_a_user_error); the restricted unpickler
(tests/test_torch_checkpoint.py) and the WRN-50 export library calls
(tests/test_wrn50.py); the kernels' own tracemalloc budget
(tests/test_scores.py::test_peak_memory_within_budget).
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomclust_lite.core import kernel as _kernel
from anomclust_lite.cli.main import main
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from anomclust_lite.clustering.dispatch import ClusteringWarning
from anomclust_lite.features.images import ImageLoadError, load_image
from conftest import make_bags
from _cli_support import fixture_base_folder, fixture_folder, fixture_model_path  # noqa: F401 (pytest fixtures)
from _cli_support import (
    N_IMAGES,
    assert_one_error_line,
    draw_image,
    make_folder,
    model_args,
    read_csv,
    run,
)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import _tiny_onnx  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = ("clusters.csv", "summary.json", "report.html", "model.npz")


# ---------------------------------------------------------------- fixtures and helpers


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def warnings_in(err: str) -> List[str]:
    return [line for line in err.splitlines() if line.startswith("anomclust-lite: warning: ")]


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a cheap 'bomb')."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def png_with_bad_pixel_data(image: Image.Image) -> bytes:
    """A PNG whose header is valid but whose compressed pixel stream is garbage (Pillow cannot decode it)."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 4
    for i in range(start + 2, min(start + 200, len(data) - 16)):
        data[i] ^= 0x5A
    return bytes(data)


def make_slow_model(path: Path, *, channels: int = 16, seed: int = 0, size: int = 64, n: int = 512,
                    repeats: int = 32) -> Path:
    """The conv of tests/_cli_support.py::make_onnx (same weights, fixed batch of 1) plus ``repeats``
    input-dependent n x n matrix products whose sum is multiplied by 0 and added to the output:
    the features equal make_onnx's up to float rounding (ONNX Runtime may choose another convolution
    algorithm for this fixed input shape), each image just takes a while."""
    w = _tiny_onnx.conv_weights(channels, seed)
    v = np.random.default_rng(seed + 1).standard_normal(n)
    q = np.eye(n) - 2.0 * np.outer(v, v) / (v @ v)  # a dense orthogonal (Householder) matrix: no overflow
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(q.astype(np.float32), "q"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("ReduceMean", ["x"], ["s"], keepdims=0),
             helper.make_node("Mul", ["q", "s"], ["a0"])]
    for i in range(repeats):
        nodes.append(helper.make_node("MatMul", [f"a{i}", "q"], [f"a{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"a{repeats}"], ["r"], keepdims=0),
              helper.make_node("Mul", ["r", "zero"], ["r0"]),
              helper.make_node("Add", ["conv", "r0"], ["feat"])]
    graph = helper.make_graph(
        nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, channels, size // 8, size // 8])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only use only: 3 types x 10 images (30)."""
    return make_folder(tmp_path_factory.mktemp("big") / "parts", seed=3, per_class=10)


def partition(rows: Sequence[Dict[str, str]], rename: Optional[Dict[str, str]] = None) -> List[List[str]]:
    """The clusters as sorted lists of paths (label names ignored)."""
    groups: Dict[str, List[str]] = {}
    for r in rows:
        path = rename[r["path"]] if rename else r["path"]
        groups.setdefault(r["cluster"], []).append(path)
    return sorted(sorted(g) for g in groups.values())


def subprocess_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def cli_command(*argv: object) -> List[str]:
    return [sys.executable, "-m", "anomclust_lite", *(str(a) for a in argv)]


# ================================================================ bad input: image files


def test_bad_image_files_are_skipped_with_a_warning_each_and_a_count(capsys, folder: Path, model_path: Path,
                                                                     tmp_path: Path) -> None:
    good = folder / "good"
    png = (good / "000.png").read_bytes()
    jpeg = io.BytesIO()
    Image.open(good / "001.png").save(jpeg, "JPEG")
    (good / "zero.png").write_bytes(b"")
    (good / "text.jpg").write_text("not an image, despite the name")
    (good / "trunc.png").write_bytes(png[: len(png) // 2])
    (good / "trunc.jpg").write_bytes(jpeg.getvalue()[:300])
    (good / "undecodable.png").write_bytes(png_with_bad_pixel_data(draw_image("good", np.random.default_rng(1))))
    bad = {"good/zero.png": "empty file", "good/text.jpg": "not a recognised image format",
           "good/trunc.png": "truncated", "good/trunc.jpg": "Truncated", "good/undecodable.png": "corrupt"}
    out = tmp_path / "o"
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out)
    assert rc == 0, err
    assert_no_traceback(err)
    for name, problem in bad.items():
        assert [w for w in warnings_in(err) if name in w and problem in w], (name, err)
    assert f"skipped: {len(bad)} of {N_IMAGES + len(bad)} images could not be read" in stdout
    summary = summary_of(out)
    assert summary["n_images"] == N_IMAGES
    assert {p["path"]: p["reason"] for p in summary["skipped"]["unreadable_images"]}.keys() == bad.keys()
    assert len(read_csv(out / "clusters.csv")) == N_IMAGES
    # -q silences the warnings, not the count
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")
    assert rc == 0 and err == "" and "skipped: 5 of 17 images could not be read" in stdout


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("zero.png", b"", "empty file (0 bytes)"),
        ("text.png", b"hello, I am text", "not a recognised image format"),
        ("trunc.png", None, "corrupt or truncated image data"),
        ("undecodable.png", "bad-data", "corrupt or truncated image data"),
        ("bomb.png", "bomb", "decompression bomb"),
    ],
)
def test_bad_image_with_on_error_fail_is_one_error_line(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                         name: str, content: object, problem: str) -> None:
    if content is None:
        data = (folder / "good" / "000.png").read_bytes()
        content = data[: len(data) // 2]
    elif content == "bad-data":
        content = png_with_bad_pixel_data(draw_image("red_spot", np.random.default_rng(2)))
    elif content == "bomb":
        content = png_header_only(20_000, 20_000)  # 400 M pixels in 100 bytes; refused before decoding
    (folder / "good" / name).write_bytes(content)  # type: ignore[arg-type]
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--on-error", "fail", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, f"good/{name}", problem)
    assert not (tmp_path / "o" / "clusters.csv").exists()


def test_decompression_bomb_limit_is_max_pixels(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The default limit is Pillow's, 89,478,485 pixels, and is named in --help.
    rc, stdout, _ = run(capsys, "--help")
    assert rc == 0 and "--max-pixels" in stdout and "89,478,485" in stdout
    # Above the limit: refused (a skip), before any pixel is decoded.
    Image.new("RGB", (65, 65), (120, 120, 120)).save(folder / "good" / "big.png")  # 4225 pixels
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--max-pixels", "4096",
                          "--out", tmp_path / "o")
    assert rc == 0, err
    assert [w for w in warnings_in(err) if "good/big.png" in w and "more than max_pixels=4096" in w], err
    assert "skipped: 1 of 13 images" in stdout
    # Below every image: none is readable -> exit 1.
    rc, _, err = run(capsys, folder, *model_args(model_path), "--max-pixels", "100", "--out", tmp_path / "o",
                     "--no-cache")  # a cached image is not decoded again, so not checked again
    assert rc == 1
    assert_one_error_line(err, "need at least 2 readable images")
    # A tiny file of extreme aspect ratio would be upsampled to 64 x 1,280,000: refused too.
    Image.new("RGB", (1, 20_000), (9, 9, 9)).save(folder / "good" / "sliver.png")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--max-pixels", "1000000",
                     "--out", tmp_path / "o")
    assert rc == 0, err
    assert [w for w in warnings_in(err) if "good/sliver.png" in w and "extreme aspect ratio" in w], err
    # --max-pixels above Pillow's own limit lifts that too for the run, and puts it back afterwards.
    (folder / "good" / "big.png").unlink()
    (folder / "good" / "sliver.png").unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for Pillow's default
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(folder / "good" / "000.png", max_pixels=5000)  # the library alone: Pillow's limit applies
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--max-pixels", "5000",
                     "--out", tmp_path / "o")
    assert rc == 0 and "warning" not in err, err
    assert Image.MAX_IMAGE_PIXELS == 1000


def _exif_rotated(image: Image.Image, path: Path) -> None:
    """Store ``image`` rotated, with the EXIF orientation (6) that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    image.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def test_small_16bit_rgba_cmyk_palette_and_exif_images_are_used(capsys, folder: Path, model_path: Path,
                                                                tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    odd = folder / "odd"
    odd.mkdir()
    src = draw_image("red_spot", rng)
    Image.new("RGB", (5, 5), (200, 30, 30)).save(odd / "tiny_5x5.png")            # smaller than the crop
    Image.new("RGB", (40, 3), (30, 200, 30)).save(odd / "thin_40x3.png")
    grey16 = (np.asarray(src.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(odd / "grey16.png")
    assert Image.open(odd / "grey16.png").mode in ("I;16", "I")
    rgba = src.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(src.size))
    rgba.save(odd / "rgba.png")
    src.convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    src.convert("CMYK").save(odd / "cmyk.tif")
    src.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(odd / "palette.png", transparency=0)
    src.convert("LA").save(odd / "la.png")
    src.convert("1").save(odd / "bilevel.png")
    # EXIF: the same picture stored upright and stored rotated with an orientation tag.
    asym = draw_image("green_bar", rng)
    ImageDraw.Draw(asym).rectangle([0, 0, 30, 6], fill=(250, 250, 0))
    asym.save(odd / "upright.png")
    _exif_rotated(asym, odd / "exif_rotated.png")
    out = tmp_path / "o"
    names = sorted(p.name for p in odd.iterdir())
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "4", "--out", out)
    assert rc == 0, err
    assert warnings_in(err) == [] and "skipped" not in stdout, err
    rows = {r["path"]: r for r in read_csv(out / "clusters.csv")}
    assert len(rows) == N_IMAGES + len(names)
    assert all(f"odd/{name}" in rows for name in names)
    # Orientation applied: the rotated file gives exactly the upright one's features, hence the same
    # top patch score, cluster and distance (ignoring the tag would give another bag).
    upright, rotated = rows["odd/upright.png"], rows["odd/exif_rotated.png"]
    assert (rotated["cluster"], rotated["distance"], rotated["top_score"]) == (
        upright["cluster"], upright["distance"], upright["top_score"])
    assert float(upright["top_score"]) > 0


def test_exif_tag_is_what_makes_the_rotated_file_match(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    """Control for the test above: without the tag, the rotated file's features differ."""
    asym = draw_image("green_bar", np.random.default_rng(7))
    ImageDraw.Draw(asym).rectangle([0, 0, 30, 6], fill=(250, 250, 0))
    asym.save(folder / "good" / "upright.png")
    asym.transpose(Image.Transpose.ROTATE_90).save(folder / "good" / "rotated_no_tag.png")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    rows = {r["path"]: r for r in read_csv(tmp_path / "o" / "clusters.csv")}
    assert rows["good/upright.png"]["top_score"] != rows["good/rotated_no_tag.png"]["top_score"]


def test_unreadable_file(capsys, folder: Path, model_path: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    locked = folder / "good" / "locked.png"
    shutil.copy(folder / "good" / "000.png", locked)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root ignores permissions: simulate the refusal
        real_open = os.open

        def open_denied(file, flags, *args, **kwargs):
            if os.path.basename(os.fspath(file)) == "locked.png":
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_denied)
    try:
        rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o")
        assert rc == 0, err
        assert [w for w in warnings_in(err) if "good/locked.png" in w and "permission denied" in w], err
        assert "skipped: 1 of 13 images could not be read" in stdout
        rc, _, err = run(capsys, folder, *model_args(model_path), "--on-error", "fail", "--out", tmp_path / "o")
        assert rc == 1
        assert_one_error_line(err, "good/locked.png", "permission denied")
    finally:
        locked.chmod(0o644)


def test_broken_links_link_loops_and_unreadable_folders_are_skipped(capsys, folder: Path, model_path: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink(folder / "nowhere.png", folder / "good" / "broken.png")
    os.symlink("self.png", folder / "good" / "self.png")          # a link to itself: ELOOP
    os.symlink("..", folder / "good" / "up")                       # a folder loop
    (folder / "locked_dir").mkdir()
    shutil.copy(folder / "good" / "000.png", folder / "locked_dir" / "x.png")
    import anomclust_lite.features.listing as listing_module

    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if not isinstance(path, int) and Path(path).name == "locked_dir":  # (shutil.rmtree scans by descriptor)
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(listing_module.os, "scandir", scandir)
    out = tmp_path / "o"
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out)
    assert rc == 0, err
    expected = {"good/broken.png": "broken symbolic link", "good/self.png": "symbolic link loop",
                "good/up": "already scanned", "locked_dir": "permission denied"}
    for name, problem in expected.items():
        assert [w for w in warnings_in(err) if name in w and problem in w], (name, err)
    assert "4 broken links, link loops or unreadable folders" in stdout
    problems = {p["path"]: p["reason"] for p in summary_of(out)["skipped"]["problems"]}
    assert problems.keys() == expected.keys()
    assert len(read_csv(out / "clusters.csv")) == N_IMAGES


def test_non_utf8_name_of_a_bad_file_is_printable(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"bad_\xff.png")
    try:
        (folder / "good" / name).write_bytes(b"garbage")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o")
    assert rc == 0, err
    assert [w for w in warnings_in(err) if "good/bad_\\xff.png" in w], err
    err.encode("ascii")  # escaped, printable anywhere
    assert [p["path"] for p in summary_of(tmp_path / "o")["skipped"]["unreadable_images"]] == ["good/bad_\\xff.png"]
    rc, _, err = run(capsys, folder, *model_args(model_path), "--on-error", "fail", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "good/bad_\\xff.png", "not a recognised image format")


# ================================================================ bad input: folders, K, duplicates, NaN


def test_one_readable_image_and_k_above_the_readable_count(capsys, model_path: Path, base_folder: Path,
                                                           tmp_path: Path) -> None:
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(base_folder / "good" / "000.png", two / "a.png")
    (two / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc, _, err = run(capsys, two, *model_args(model_path), "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "need at least 2 readable images to cluster, found 1")
    shutil.copy(base_folder / "good" / "001.png", two / "c.png")
    shutil.copy(base_folder / "red_spot" / "000.png", two / "d.png")
    rc, _, err = run(capsys, two, *model_args(model_path), "--k", "4", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "--k 4 is larger than the number of readable images (3)")


def test_identical_images(capsys, model_path: Path, base_folder: Path, tmp_path: Path) -> None:
    dup = tmp_path / "dup"
    dup.mkdir()
    for i in range(6):
        shutil.copy(base_folder / "good" / "000.png", dup / f"{i}.png")
    rc, stdout, err = run(capsys, dup, *model_args(model_path), "--out", tmp_path / "auto")
    assert rc == 0, err
    assert "6 images -> 1 clusters (K = 1: all images have identical features)" in stdout
    assert summary_of(tmp_path / "auto")["k_choice"]["method"] == "identical-images"
    rc, stdout, err = run(capsys, dup, *model_args(model_path), "--k", "3", "--out", tmp_path / "k3")
    assert rc == 0, err
    assert [w for w in warnings_in(err) if "only 1 of the 6 images have distinct features" in w], err
    rows = read_csv(tmp_path / "k3" / "clusters.csv")
    assert sorted({r["cluster"] for r in rows}) == ["0", "1", "2"]
    assert {r["distance"] for r in rows} == {"0"}


def test_identical_images_warning_in_the_library() -> None:
    bags = make_bags(np.random.default_rng(0), 2, 6, 4)
    with pytest.warns(ClusteringWarning, match="only 2 of the 5 images have distinct features"):
        AnomalyClusterer(3).fit(bags[[0, 0, 1, 1, 1]])


def test_nan_from_the_model(capsys, folder: Path, tmp_path: Path) -> None:
    nan_model = _tiny_onnx.make_model(tmp_path / "nan.onnx", extra=("nan",))  # NaN for images with white pixels
    args = ["--model", tmp_path / "nan.onnx", "--resize", "64", "--crop", "64"]
    assert nan_model.is_file()
    Image.new("RGB", (64, 64), (255, 255, 255)).save(folder / "good" / "white.png")
    rc, stdout, err = run(capsys, folder, *args, "--k", "3", "--out", tmp_path / "o")
    assert rc == 0, err
    assert [w for w in warnings_in(err) if "good/white.png: output 'feat' of the model contains NaN or inf" in w], err
    assert "skipped: 1 of 13 images could not be read" in stdout
    rc, _, err = run(capsys, folder, *args, "--k", "3", "--on-error", "fail", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "good/white.png", "NaN or inf")
    white = tmp_path / "white"
    white.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (255, 255, 255)).save(white / f"{i}.png")
    rc, _, err = run(capsys, white, *args, "--out", tmp_path / "w")
    assert rc == 1
    assert_one_error_line(err, "need at least 2 readable images to cluster, found 0")


# ================================================================ bad input: models and checkpoints


@pytest.mark.parametrize("case", ["garbage", "empty", "fixed-size", "unknown-output", "not-4d", "two-outputs"])
def test_bad_onnx_models_are_one_error_line_before_any_extraction(capsys, base_folder: Path, tmp_path: Path,
                                                                  case: str) -> None:
    path = tmp_path / f"{case}.onnx"
    extra: List[str] = []
    if case == "garbage":
        path.write_bytes(b"\x08\x07 definitely not protobuf" * 10)
        needles = ["could not be loaded as an ONNX model"]
    elif case == "empty":
        path.write_bytes(b"")
        needles = ["is an empty file"]
    elif case == "fixed-size":
        _tiny_onnx.make_model(path, size=32)
        needles = ["expects input height 32", "crop=64"]
    elif case == "unknown-output":
        _tiny_onnx.make_model(path)
        extra = ["--model-output", "relu_99"]
        needles = ["output 'relu_99' is not an output", "'feat'"]
    elif case == "not-4d":
        _tiny_onnx.make_model(path, extra=("flat",))
        extra = ["--model-output", "flat"]
        needles = ["output 'flat'", "expected a 4-D feature map"]
    else:
        _tiny_onnx.make_model(path, extra=("stride16",))
        needles = ["has outputs 'feat', 'feat16'", "--model-output"]
    out = tmp_path / "o"
    rc, _, err = run(capsys, base_folder, "--model", path, "--resize", "64", "--crop", "64", *extra, "--out", out)
    assert rc == 1
    assert_one_error_line(err, f"{case}.onnx", *needles)
    assert not any(out.rglob("*.npy"))  # failed before extracting anything


def _load_export_tool():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("export_wrn50_tool", REPO / "tools" / "export_wrn50.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # type: ignore[union-attr]
    return tool


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_export_tool_refuses_pickled_code_with_exit_1(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fmt: str) -> None:
    """tests/test_wrn50.py checks the library refusal; this is the tool's exit status (never executed)."""
    from _torch_writer import Call, Global, save_legacy, save_zip

    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    payload = {"conv1.weight": np.ones((2, 2), np.float32), "x": Call(Global("os", "system"), (f"touch '{marker}'",))}
    evil = (save_zip if fmt == "zip" else save_legacy)(payload, tmp_path / "evil.pth")
    tool = _load_export_tool()
    out = tmp_path / "m.onnx"
    # Not torchvision's checksum: refused before it is even parsed.
    assert tool.main(["--checkpoint", str(evil), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "95faca4d" in err
    # Accepted as "your own weights": the restricted unpickler refuses the global.
    assert tool.main(["--checkpoint", str(evil), "--out", str(out), "--allow-unverified"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'os.system'" in err
    assert not marker.exists() and not out.exists()


# ================================================================ bad input: damaged cache and model.npz


def _damage_cache_entries(features: Path) -> int:
    entries = sorted(features.rglob("*.npy"))
    assert len(entries) >= 5
    data = entries[0].read_bytes()
    entries[0].write_bytes(data[: len(data) // 2])                                   # truncated
    flipped = bytearray(entries[1].read_bytes())
    flipped[-7] ^= 0x01
    entries[1].write_bytes(bytes(flipped))                                           # one bit of data
    content = entries[2].read_bytes()
    start = content.index(b"'shape': (") + len(b"'shape': (")
    end = content.index(b")", start)
    huge = b"4000000000, 9999"
    pad = content.index(b"\n") - len(huge) + (end - start)  # keep the header length: drop padding spaces
    tampered = content[:start] + huge + content[end:pad] + content[content.index(b"\n"):]
    assert len(tampered) == len(content) and np.lib.format.read_array_header_1_0(io.BytesIO(tampered[8:]))
    entries[2].write_bytes(tampered)                                                 # a huge claimed shape
    entries[3].with_suffix(".json").write_text("{not json")                          # the sidecar
    entries[4].write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <built")            # a broken header
    return 5


def test_damaged_feature_cache_entries_are_recomputed(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "o", tmp_path / "cache"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "--cache-dir", cache, "-q")[0] == 0
    first = (out / "clusters.csv").read_bytes()
    damaged = _damage_cache_entries(cache / "features")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "--cache-dir", cache)
    assert rc == 0, err
    assert_no_traceback(err)
    cache_warnings = [w for w in warnings_in(err) if "feature cache entry" in w and "recomputing" in w]
    assert len(cache_warnings) == damaged, err
    extraction = summary_of(out)["extraction"]
    assert (extraction["cache_hits"], extraction["computed"]) == (N_IMAGES - damaged, damaged)
    assert (out / "clusters.csv").read_bytes() == first  # nothing skipped, nothing changed
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "--cache-dir", cache)
    assert rc == 0 and warnings_in(err) == []
    assert summary_of(out)["extraction"]["cache_hits"] == N_IMAGES  # the damaged entries were rewritten


def test_damaged_model_npz_is_refused_by_assign(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    cache = tmp_path / "cache"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "--cache-dir", cache, "-q")[0] == 0
    data = (out / "model.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    damaged = {"half": data[: len(data) // 2], "last bytes cut": data[:-10], "empty": b"",
               "not a zip": b"PK\x03\x04" + bytes(100)}
    for what, content in damaged.items():
        bad.write_bytes(content)
        rc, _, err = run(capsys, "assign", bad, folder, "--out", tmp_path / "a", "--cache-dir", cache)
        assert rc == 1, what
        assert_one_error_line(err, "model.npz is corrupt or from an incompatible version")
    # Single flipped bytes anywhere: refused with one line, or (zip metadata such as a time stamp)
    # harmless; never a traceback.
    refused = 0
    offsets = range(40, len(data), max(1, len(data) // 40))
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        rc, _, err = run(capsys, "assign", bad, folder, "--out", tmp_path / "a", "--cache-dir", cache, "-q")
        assert rc in (0, 1) and "Traceback" not in err, (offset, err)
        if rc == 1:
            assert_one_error_line(err)
            refused += 1
    assert refused >= len(offsets) // 2
    # A well-formed file with tampered content (cluster ids out of range).
    with np.load(out / "model.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["labels"] = arrays["labels"] + 7
    np.savez_compressed(bad, **arrays)
    rc, _, err = run(capsys, "assign", bad, folder, "--out", tmp_path / "t", "--cache-dir", cache)
    assert rc == 1
    assert_one_error_line(err, "corrupt", "labels")
    assert not (tmp_path / "t" / "assignments.csv").exists()


# ================================================================ bad input: output folder


def _fail_mkstemp(monkeypatch: pytest.MonkeyPatch, error: int, *, only_probe: bool) -> None:
    """Make new files fail like a full (ENOSPC: real writes to /dev/full) or read-only folder."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        is_probe = str(kwargs.get("prefix", "")).startswith(".probe-")
        if only_probe != is_probe:
            return real_mkstemp(*args, **kwargs)
        if error != errno.ENOSPC:
            raise OSError(error, os.strerror(error), str(kwargs.get("dir")))
        fd, name = real_mkstemp(*args, **kwargs)  # a real name, whose writes go to /dev/full
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_full_or_unwritable_out_fails_before_extraction(capsys, base_folder: Path, model_path: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    if error == errno.ENOSPC and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to simulate a full disk")
    _fail_mkstemp(monkeypatch, error, only_probe=True)
    out = tmp_path / "o"
    rc, _, err = run(capsys, base_folder, *model_args(model_path), "--out", out)
    assert rc == 1
    assert_one_error_line(err, f"cannot write to output folder {out}", os.strerror(error), "--out")
    assert not any(out.rglob("*.npy"))  # nothing extracted
    assert list(out.iterdir()) == []


def test_unwritable_cache_dir_is_one_warning_and_no_cache(capsys, base_folder: Path, model_path: Path,
                                                          tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = run(capsys, base_folder, *model_args(model_path), "--out", tmp_path / "o",
                     "--cache-dir", blocker / "cache")
    assert rc == 0, err
    assert warnings_in(err) == [f"anomclust-lite: warning: cannot write to cache folder {blocker / 'cache'} (Not a directory); choose another "
                                "--cache-dir or pass --no-cache; going on without a cache"]


def test_disk_full_while_writing_keeps_the_previous_results(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full to simulate a full disk")
    out = tmp_path / "o"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")[0] == 0
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    _fail_mkstemp(monkeypatch, errno.ENOSPC, only_probe=False)  # the probe passes, the disk fills up later
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", out, "-q")
    assert rc == 1
    assert_one_error_line(err, f"{out / 'clusters.csv'}: No space left on device")
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ================================================================ nothing lost


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_model(tmp_path_factory.mktemp("slow") / "slow.onnx")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_cache(folder: Path, model: Path, out: Path, entries: int = 5) -> "tuple[subprocess.Popen, int]":
    """Start the CLI in a subprocess; return once ``entries`` images are in the cache."""
    proc = subprocess.Popen(
        cli_command(folder, "--model", model, "--resize", "64", "--crop", "64", "--threads", "1", "--k", "3",
                    "--out", out, "--cache-dir", out.parent / "cache", "-q"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=out.parent,
        # Ctrl-C must reach the CLI as from a terminal, whatever the test process inherited or a library
        # left behind (after scikit-learn's silhouette in test_auto_k, SIGINT is SIG_IGN here, and an
        # ignored signal stays ignored in a child).
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        features = out.parent / "cache" / "features"
        done = len(list(features.rglob("*.json"))) if features.is_dir() else 0
        if done >= entries:
            return proc, done
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the run ended (status {proc.returncode}) before {entries} images were cached: {err}")


def _temporary_files(root: Path) -> List[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_mid_extraction_exits_130_keeps_old_results_and_resumes(capsys, big_folder: Path, slow_model: Path,
                                                                       model_path: Path, base_folder: Path,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Results of an earlier run in the same --out must survive the interrupted one untouched.
    assert run(capsys, base_folder, *model_args(model_path), "--k", "2", "--out", out, "--no-cache", "-q")[0] == 0
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    proc, _ = _start_and_wait_for_cache(big_folder, slow_model, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr == ("anomclust-lite: interrupted; features extracted so far are cached, "
                      "a rerun continues from there\n")
    assert stdout == ""
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert _temporary_files(out) == []
    cached = len(list((tmp_path / "cache" / "features").rglob("*.json")))
    assert 5 <= cached < 30
    # The rerun takes those from the cache.
    rc, _, err = run(capsys, big_folder, "--model", slow_model, "--resize", "64", "--crop", "64", "--threads", "1",
                     "--k", "3", "--out", out, "--cache-dir", tmp_path / "cache", "-q")
    assert rc == 0, err
    extraction = summary_of(out)["extraction"]
    assert (extraction["cache_hits"], extraction["computed"]) == (cached, 30 - cached)
    assert len(read_csv(out / "clusters.csv")) == 30


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_mid_extraction_loses_nothing_and_resumes(capsys, big_folder: Path, slow_model: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, _ = _start_and_wait_for_cache(big_folder, slow_model, out)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not [name for name in OUTPUTS if (out / name).exists()]
    # At most the one cache file being written when the process died is left as a temporary file
    # (ignored by every later run; safe to delete).
    features = tmp_path / "cache" / "features"
    stray = _temporary_files(tmp_path)
    assert len(stray) <= 1 and all(p.parent.parent == features for p in stray), stray
    cached = len(list(features.rglob("*.json")))
    rc, _, err = run(capsys, big_folder, "--model", slow_model, "--resize", "64", "--crop", "64", "--threads", "1",
                     "--k", "3", "--out", out, "--cache-dir", tmp_path / "cache", "-q")
    assert rc == 0, err
    extraction = summary_of(out)["extraction"]
    assert extraction["cache_hits"] == cached and extraction["computed"] == 30 - cached
    # The resumed result is exactly an uninterrupted run's: the same model (ONNX Runtime may pick another
    # convolution algorithm, with other rounding, for make_onnx's dynamic input shape), no cache.
    ref = tmp_path / "ref"
    assert run(capsys, big_folder, "--model", slow_model, "--resize", "64", "--crop", "64", "--threads", "1",
               "--k", "3", "--out", ref, "--no-cache", "-q")[0] == 0
    assert (out / "clusters.csv").read_bytes() == (ref / "clusters.csv").read_bytes()


# ================================================================ bounded memory


def test_fit_peak_memory_stays_within_the_budget_plus_documented_terms() -> None:
    n, m, d = 40, 128, 32  # patches enough for the kernel's Gram blocks to set the peak at the default budget
    bags = make_bags(np.random.default_rng(5), n, m, d)
    budget_mb = 16 * _kernel.block_bytes(1, 1, m, d) / 2**20
    b, _ = _kernel.plan_tasks(m, d, budget_mb, n)
    assert b <= 16 and _kernel.n_tasks(n, n, b, symmetric=True) >= 90  # many tasks of few images

    def peak(memory_mb: float) -> int:
        model = AnomalyClusterer(3, memory_mb=memory_mb)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            model.fit(bags)
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    AnomalyClusterer(3, memory_mb=budget_mb).fit(bags)  # first-use imports (threadpoolctl: ~2 MB) are not fit memory
    small = peak(budget_mb)
    # Outside memory_mb (see the README's memory model): O(N*M) scores, weights and accumulators,
    # O(N^2) distances and linkage, the float64 chunk of the weighted averages (at most 32 MiB;
    # here all N*M*D values) with the finiteness check, and the float16 reference kept for model.npz.
    extra = 12 * n * m * 8 + 6 * n * n * 8 + n * m * d * (8 + 1) + n * m * d * 2 + (1 << 16)
    assert small <= budget_mb * 2**20 + extra, (small, budget_mb * 2**20, extra)
    full_gram = (n * m) ** 2 * 4
    assert budget_mb * 2**20 + extra < full_gram / 8  # the bound is far below one unblocked Gram matrix
    assert peak(512.0) > small  # the default budget does use more: the test measures the kernel


def test_bag_dtype_option_library(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = make_bags(rng, 3, 1, 16)
    bags = np.concatenate([centers[i % 3] + 0.3 * rng.standard_normal((1, 20, 16)) for i in range(24)])
    bags = (bags / np.linalg.norm(bags, axis=-1, keepdims=True)).astype(np.float32)
    m32 = AnomalyClusterer(3).fit(bags)
    m16 = AnomalyClusterer(3, bag_dtype="float16").fit(bags)
    np.testing.assert_array_equal(m16.labels_, m32.labels_)
    np.testing.assert_allclose(m16.embeddings_, m32.embeddings_, atol=2e-3)
    assert m16.get_params()["bag_dtype"] == "float16"
    m16.save(tmp_path / "m.npz")
    loaded = AnomalyClusterer.load(tmp_path / "m.npz")
    assert loaded.bag_dtype == "float16"
    np.testing.assert_array_equal(loaded.assign(bags).labels, m32.labels_)
    with pytest.raises(ValueError, match="bag_dtype"):
        AnomalyClusterer(3, bag_dtype="float64").fit(bags)


def test_bag_dtype_option_extractor_and_cli(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite.features.extractor import Extractor

    paths = sorted(folder.rglob("*.png"))
    ext = Extractor(model_path, resize=64, crop=64)
    b32 = ext.extract_all(paths).bags
    b16 = ext.extract_all(paths, bag_dtype="float16").bags
    assert b16.dtype == np.float16 and b32.dtype == np.float32
    np.testing.assert_array_equal(b16, b32.astype(np.float16))
    with pytest.raises(ValueError, match="bag_dtype"):
        ext.extract_all(paths, bag_dtype="int8")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "a", "-q")
    assert rc == 0, err
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--bag-dtype", "float16",
                     "--out", tmp_path / "b", "-q")
    assert rc == 0, err
    assert summary_of(tmp_path / "b")["parameters"]["bag_dtype"] == "float16"
    assert partition(read_csv(tmp_path / "a" / "clusters.csv")) == partition(read_csv(tmp_path / "b" / "clusters.csv"))
    rc, _, err = run(capsys, "assign", tmp_path / "b" / "model.npz", folder, "--out", tmp_path / "c", "-q")
    assert rc == 0, err
    assert all(r["fitted"] == "1" for r in read_csv(tmp_path / "c" / "assignments.csv"))
    assert main([str(folder), "--bag-dtype", "float64"]) == 2
    capsys.readouterr()


@pytest.mark.realdata
def test_float16_bags_on_real_data_within_1e_3_nmi(capsys, shared_dir: Path, shared_model: Path,
                                                   tmp_path: Path) -> None:
    """MVTec bottle test split, 10 images of each of the 4 types (symlinks), the shared ResNet-18 layer 2."""
    src = shared_dir / "data" / "mvtec" / "bottle" / "test"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    subset = tmp_path / "bottle"
    for cls in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (subset / cls).mkdir(parents=True)
        for image in sorted((src / cls).glob("*.png"))[:10]:
            os.symlink(image, subset / cls / image.name)
    cache = tmp_path / "features"
    results = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        rc, _, err = run(capsys, subset, "--model", shared_model, "--model-output", "relu_43", "--k", "4",
                         "--bag-dtype", dtype, "--cache-dir", cache, "--out", out, "-q")
        assert rc == 0, err
        results[dtype] = (summary_of(out), read_csv(out / "clusters.csv"))
    (s32, rows32), (s16, rows16) = results["float32"], results["float16"]
    assert s16["extraction"]["cache_hits"] == 40  # the second run reused the features
    assert abs(s16["metrics"]["nmi"] - s32["metrics"]["nmi"]) <= 1e-3
    p32, p16 = partition(rows32), partition(rows16)
    moved = sum(1 for group in p16 if group not in p32)
    assert p16 == p32 or moved <= 2, (p32, p16)
    print(f"bottle subset: NMI float32 {s32['metrics']['nmi']:.4f}, float16 {s16['metrics']['nmi']:.4f}, "
          f"partition {'identical' if p16 == p32 else 'differs'}")


# ================================================================ determinism


def test_same_clusters_csv_whatever_the_threads_and_memory_budget(capsys, big_folder: Path, model_path: Path,
                                                                  tmp_path: Path) -> None:
    common = ["--model", model_path, "--resize", "64", "--crop", "64", "--no-cache", "-q"]  # automatic K
    tiny = _kernel.block_bytes(3, 3, 64, 16) * 1.01 / 2**20  # tasks of 1 x 4 images on 2 CPUs: over 100 tasks
    runs = {
        "blas1_ort1": ({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, ["--threads", "1"]),
        "blas2_ort2_tiny": ({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
                            ["--threads", "2", "--memory-mb", f"{tiny:.4f}"]),
    }
    outputs = {}
    for name, (env, extra) in runs.items():
        out = tmp_path / name
        res = subprocess.run(cli_command(big_folder, *common, *extra, "--out", out), capture_output=True, text=True,
                             env=subprocess_env(**env), timeout=300)
        assert res.returncode == 0, res.stderr
        outputs[name] = (out / "clusters.csv").read_bytes()
    rc, _, err = run(capsys, big_folder, *common, "--out", tmp_path / "default")  # in-process, default budget
    assert rc == 0, err
    outputs["default"] = (tmp_path / "default" / "clusters.csv").read_bytes()
    # The thread count changes nothing (bitwise); another memory budget changes the numbers by float32
    # rounding at most (the kernel's tasks have another width), never the clusters.
    tiny_budget = outputs.pop("blas2_ort2_tiny")
    assert len(set(outputs.values())) == 1, {k: v[:300] for k, v in outputs.items()}
    assert_same_up_to_rounding(read_csv(tmp_path / "default" / "clusters.csv"),
                               read_csv(tmp_path / "blas2_ort2_tiny" / "clusters.csv"))
    assert tiny_budget.splitlines()[0] == outputs["default"].splitlines()[0]  # the same columns
    assert summary_of(tmp_path / "default")["k"] >= 2


@pytest.mark.parametrize("k", [None, 3])
def test_image_order_does_not_change_the_partition(capsys, big_folder: Path, model_path: Path, tmp_path: Path,
                                                   k: Optional[int]) -> None:
    rng = np.random.default_rng(11)
    images = sorted(big_folder.rglob("*.png"))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rename: Dict[str, str] = {}
    for new_index, image in zip(rng.permutation(len(images)), images):
        new_name = f"{new_index:03d}.png"  # one flat folder: the sort order mixes the types
        shutil.copy(image, shuffled / new_name)
        rename[new_name] = image.relative_to(big_folder).as_posix()
    extra = [] if k is None else ["--k", str(k)]
    cache = tmp_path / "cache"
    for src, out in ((big_folder, tmp_path / "a"), (shuffled, tmp_path / "b")):
        rc, _, err = run(capsys, src, *model_args(model_path), *extra, "--cache-dir", cache, "--out", out, "-q")
        assert rc == 0, err
    a, b = read_csv(tmp_path / "a" / "clusters.csv"), read_csv(tmp_path / "b" / "clusters.csv")
    # The same partition; the numbers agree up to float32 rounding: pairs are multiplied the other way
    # round and summed in another order.
    assert_same_up_to_rounding(a, b, rename)
    assert summary_of(tmp_path / "a")["k"] == summary_of(tmp_path / "b")["k"]


def assert_same_up_to_rounding(a: Sequence[Dict[str, str]], b: Sequence[Dict[str, str]],
                               rename: Optional[Dict[str, str]] = None) -> None:
    """Two clusters.csv files (rows of ``read_csv``) hold the same images and partition, and distances
    and scores equal to 1e-5 relative; without ``rename`` (the same folder), also the same cluster
    numbers and labels."""
    assert partition(a) == partition(b, rename)
    by_path = {r["path"]: r for r in a}
    b_paths = [rename[r["path"]] if rename else r["path"] for r in b]  # b's images under a's names
    assert sorted(by_path) == sorted(b_paths)
    for row, path in zip(b, b_paths):
        ref = by_path[path]
        if rename is None:
            assert (ref["cluster"], ref.get("label")) == (row["cluster"], row.get("label")), (ref, row)
        for column in ("distance", "top_score"):
            np.testing.assert_allclose(float(row[column]), float(ref[column]), rtol=1e-5, atol=1e-7,
                                       err_msg=f"{column} of {ref['path']}")

"""Hostile input files (issue 14): every case builds its own hostile input in tmp_path."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from anomclust_lite.features.cache import FeatureCache, file_sha256
from anomclust_lite.features.images import (
    ImageLoadError,
    load_image,
    load_image_bytes,
    max_image_bytes,
    read_image_file,
)
from anomclust_lite.files.safe_open import UnsafeFileError, open_regular, read_regular

MINIMAL_EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)


def _png_bytes(size=(6, 4), exif=None) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", size, (10, 20, 30))
    image.save(buf, "PNG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _fail_if_called(*args, **kwargs):
    raise AssertionError("a refused format's plugin was used")


def _run_with_timeout(fn, seconds=10.0):
    """Run fn in a thread; fail (instead of hanging the suite) if it blocks."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading blocked"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# -- never run foreign code -------------------------------------------------


@pytest.mark.parametrize("name", ["evil.png", "evil.jpg", "evil.tiff"])
def test_eps_named_as_image_is_refused_and_never_reaches_the_eps_plugin(tmp_path, monkeypatch, name):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", _fail_if_called)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", _fail_if_called)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", _fail_if_called, raising=False)
    path = tmp_path / name
    path.write_bytes(MINIMAL_EPS)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message and "not a PNG, JPEG, BMP, TIFF or WebP" in message


def test_pillow_is_asked_for_the_allowed_formats_only(monkeypatch):
    seen = {}
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        seen["formats"] = formats
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    load_image_bytes(_png_bytes(), "x.png")
    assert sorted(seen["formats"]) == ["BMP", "JPEG", "PNG", "TIFF", "WEBP"]


@pytest.mark.parametrize("fmt", ["GIF", "PPM", "ICO", "PCX"])
def test_other_pillow_formats_are_refused_by_content(tmp_path, fmt):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, fmt)
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue())
    with pytest.raises(ImageLoadError, match="not a PNG, JPEG, BMP, TIFF or WebP"):
        load_image(path)


@pytest.mark.parametrize("fmt,ext", [("PNG", ".jpg"), ("JPEG", ".png"), ("BMP", ".tif"), ("TIFF", ".bmp"), ("WEBP", ".png")])
def test_allowed_formats_load_whatever_the_extension(tmp_path, fmt, ext):
    if fmt == "WEBP" and "WEBP" not in Image.SAVE:
        pytest.skip("Pillow built without WebP")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (100, 100, 100)).save(buf, fmt)
    path = tmp_path / f"x{ext}"
    path.write_bytes(buf.getvalue())
    assert load_image(path).size == (8, 8)


# -- never hang, never exhaust memory ----------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_named_as_image_is_refused_without_blocking(tmp_path):
    path = tmp_path / "x.png"
    os.mkfifo(path)
    with pytest.raises(ImageLoadError, match="FIFO"):
        _run_with_timeout(lambda: read_image_file(path))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_link_to_dev_zero_swapped_in_after_the_scan_is_refused(tmp_path):
    from anomclust_lite.features.listing import find_images

    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes())
    listed = find_images(tmp_path).paths
    assert [p.name for p in listed] == ["x.png"]
    path.unlink()
    path.symlink_to("/dev/zero")
    with pytest.raises(ImageLoadError, match="character device"):
        _run_with_timeout(lambda: read_image_file(listed[0]))


def test_huge_sparse_image_is_refused_from_its_size_without_reading(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    with open(path, "wb") as fh:
        fh.write(_png_bytes())
        fh.truncate(6 << 30)  # sparse: 6 GiB declared, nothing on disk
    monkeypatch.setattr(os, "read", _fail_if_called)
    monkeypatch.setattr(os, "fdopen", _fail_if_called)  # never turned into a readable file
    with pytest.raises(ImageLoadError, match="more than the limit"):
        read_image_file(path)


def test_image_byte_cap_follows_max_pixels(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes())
    assert read_image_file(path, max_bytes=10**6) == path.read_bytes()
    with pytest.raises(ImageLoadError, match="more than the limit of 10 bytes"):
        read_image_file(path, max_bytes=10)
    assert max_image_bytes(1000, "PNG") == 9000 + (16 << 20)


@pytest.mark.parametrize(
    "magic,refused_as", [(b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"II*\x00", None)]
)
def test_image_byte_cap_follows_the_format(tmp_path, magic, refused_as):
    """Between PNG's bound (9 B/pixel) and TIFF's (12 B/pixel): PNG and BMP refused from their size, TIFF read."""
    max_pixels = 10**6
    size = (max_image_bytes(max_pixels, "PNG") + max_image_bytes(max_pixels, "TIFF")) // 2
    path = tmp_path / "x.img"
    with open(path, "wb") as fh:
        fh.write(magic)
        fh.truncate(size)  # sparse
    if refused_as:
        with pytest.raises(ImageLoadError, match=f"more than the limit of {max_image_bytes(max_pixels, refused_as)} bytes"):
            read_image_file(path, max_pixels=max_pixels)
    else:
        assert len(read_image_file(path, max_pixels=max_pixels)) == size


def test_file_of_no_image_format_is_refused_from_its_first_bytes(tmp_path, monkeypatch):
    from anomclust_lite.files import safe_open

    path = tmp_path / "x.png"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"x" * (4 << 20))
    monkeypatch.setattr(safe_open, "read_capped", _fail_if_called)  # only the 16-byte head is read
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        read_image_file(path)


def test_sixteen_bit_rgba_png_near_max_pixels_is_within_the_png_bound():
    """The bound is the format's worst legitimate encoding: 16-bit RGBA noise, one pixel per row, stored."""
    rows = np.random.default_rng(0).integers(0, 65535, size=(4096, 1, 4), dtype=np.uint16)
    buf = io.BytesIO()
    raw = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in rows)
    header = b"\x89PNG\r\n\x1a\n"

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buf.write(header + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 4096, 16, 6, 0, 0, 0)))
    buf.write(chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))
    # More than twice the old flat 4 B/pixel, within 9 B/pixel plus the headers' bytes (covered by the 16 MiB).
    assert 8.9 * 4096 < len(buf.getvalue()) <= 9 * 4096 + 128
    assert load_image_bytes(buf.getvalue(), "x.png").size == (1, 4096)


def test_read_regular_stops_at_the_cap_when_the_file_grows(tmp_path, monkeypatch):
    path = tmp_path / "grow"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat

    def shrinking_fstat(fd):  # the file was small at the check, then grew
        st = real_fstat(fd)
        return os.stat_result((st.st_mode, 0, 0, 0, 0, 0, 5) + tuple(st)[7:])

    monkeypatch.setattr(os, "fstat", shrinking_fstat)
    with pytest.raises(UnsafeFileError, match="grew"):
        read_regular(path, 5)


def test_open_regular_refuses_a_folder(tmp_path):
    with pytest.raises(UnsafeFileError, match="folder"):
        open_regular(tmp_path, 10)


# -- the feature cache reads the same way -------------------------------------


def _cache_with_entry(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    settings = {"model_sha256": "ab", "resize": 8}
    key = cache.key(file_sha256(b"img"), settings)
    cache.put(key, np.ones((4, 2), np.float32), settings)
    array_path, meta_path = cache._paths(key)
    return cache, settings, key, array_path, meta_path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("which", ["array", "meta"])
def test_fifo_in_the_feature_cache_is_a_miss_not_a_hang(tmp_path, caplog, which):
    cache, settings, key, array_path, meta_path = _cache_with_entry(tmp_path)
    target = array_path if which == "array" else meta_path
    target.unlink()
    os.mkfifo(target)
    with caplog.at_level(logging.WARNING):
        got = _run_with_timeout(lambda: cache.get(key, settings, shape=(4, 2)))
    assert got is None


def test_cache_entry_with_huge_recorded_shape_is_refused_before_allocating(tmp_path, caplog):
    cache, settings, key, array_path, meta_path = _cache_with_entry(tmp_path)
    import json

    meta = json.loads(meta_path.read_text())
    meta["shape"] = [10**9, 10**6]
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        assert cache.get(key, settings) is None
    assert "unreadable" in caplog.text


def test_cache_sidecar_nested_json_is_a_miss(tmp_path, caplog):
    cache, settings, key, array_path, meta_path = _cache_with_entry(tmp_path)
    meta_path.write_text("[" * 100000 + "]" * 100000)
    with caplog.at_level(logging.WARNING):
        assert cache.get(key, settings, shape=(4, 2)) is None


# -- never be fooled: EXIF ----------------------------------------------------


@pytest.mark.parametrize("value", [0, 9, 65535, -1])
def test_out_of_range_exif_orientation_is_ignored_with_a_warning(caplog, value):
    exif = Image.Exif()
    exif[0x0112] = value
    try:
        data = _png_bytes(exif=exif.tobytes())
    except Exception:  # Pillow refuses to write this value: nothing to read back
        pytest.skip(f"Pillow cannot write orientation {value}")
    with caplog.at_level(logging.WARNING):
        image = load_image_bytes(data, "x.png")
    assert image.size == (6, 4)
    assert "orientation" in caplog.text


def test_non_integer_exif_orientation_is_ignored(monkeypatch, caplog):
    for value in (float("inf"), float("nan"), (1, 2), "6", b"\x00" * 1000):
        monkeypatch.setattr(Image.Image, "getexif", lambda self, v=value: {0x0112: v})
        with caplog.at_level(logging.WARNING):
            assert load_image_bytes(_png_bytes(), "x.png").size == (6, 4)
    assert caplog.text.count("invalid EXIF orientation") == 5


def test_valid_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_image_bytes(_png_bytes(exif=exif.tobytes()), "x.png")
    assert image.size == (4, 6)


# -- option bounds, checked before the long work -------------------------------


def test_threads_are_capped_at_four_per_cpu(capsys):
    from anomclust_lite.cli.main import main
    from anomclust_lite.core.kernel import available_cpus

    rc = main(["some_folder", "--threads", str(4 * available_cpus() + 1)])
    assert rc == 2
    assert "per CPU" in capsys.readouterr().err


def test_huge_resize_and_crop_are_refused_before_the_model_runs(tmp_path, capsys, monkeypatch):
    from anomclust_lite.cli import main as cli_main
    from anomclust_lite.features import extractor as extractor_module

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "m.onnx").write_bytes(b"not used")
    monkeypatch.setattr(extractor_module, "BackboneSession", _fail_if_called)  # the model is never opened
    rc = cli_main.main([str(tmp_path / "imgs"), "--model", str(tmp_path / "m.onnx"), "--resize", "9000",
                        "--crop", "9000", "--k", "2", "--out", str(tmp_path / "out"), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 1 and "batch of 8 model inputs" in err and "--memory-mb" in err and err.count("error:") == 1


def test_patch_grid_too_large_for_the_budget_is_refused_by_the_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import make_model

    from anomclust_lite.cli import main as cli_main

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i, i, i)).save(tmp_path / "imgs" / f"{i}.png")
    model = make_model(tmp_path / "m.onnx")  # 4x4 patches of 4 dims at 32x32
    rc = cli_main.main([str(tmp_path / "imgs"), "--model", str(model), "--resize", "32", "--crop", "32",
                        "--memory-mb", "0.0001", "--k", "2", "--out", str(tmp_path / "out"), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 1 and "scoring one image pair needs" in err and err.count("error:") == 1
    assert not (tmp_path / "out" / "clusters.csv").exists()


# -- other input files: review files, hashed models ----------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_review_file_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    from anomclust_lite.report.review import read_review

    path = tmp_path / "review.json"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="FIFO"):
        _run_with_timeout(lambda: read_review(path))


def test_deeply_nested_review_json_is_a_one_line_error(tmp_path):
    from anomclust_lite.report.review import read_review

    path = tmp_path / "review.json"
    path.write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        read_review(path)
    path.write_text("path,cluster,name,group,moved\n" + "x" * 200_000 + ",1,a,cluster,0\n")
    with pytest.raises(ValueError, match="not a valid review CSV"):
        read_review(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_hashing_refuses_a_fifo(tmp_path):
    from anomclust_lite.files.hashing import sha256_file

    path = tmp_path / "m.onnx"
    os.mkfifo(path)
    with pytest.raises(UnsafeFileError, match="FIFO"):
        _run_with_timeout(lambda: sha256_file(path))

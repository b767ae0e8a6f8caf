"""Tests for anomclust_lite.features.images: listing, decoding every colour mode, bad files, preprocessing."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anomclust_lite.features.images import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    display_path,
    load_image,
    load_image_bytes,
)
from anomclust_lite.features.listing import IMAGE_EXTENSIONS, find_images, is_image_file_name
from anomclust_lite.features.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess


def _rgb(rng: np.random.Generator, w: int = 20, h: int = 12) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


# ----------------------------------------------------------------- colour modes
def test_rgb_png_roundtrip(tmp_path: Path, rng: np.random.Generator) -> None:
    im = _rgb(rng)
    im.save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im))


def test_grayscale_and_one_bit(tmp_path: Path, rng: np.random.Generator) -> None:
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = np.asarray(load_image(tmp_path / "g.png"))
    assert out.shape == (9, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)
    bits = Image.fromarray(grey > 128).convert("1")
    bits.save(tmp_path / "b.png")
    out = np.asarray(load_image(tmp_path / "b.png"))
    np.testing.assert_array_equal(out[..., 0], np.where(grey > 128, 255, 0))


def test_16bit_maps_full_range_by_257(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    im.save(tmp_path / "w.png")
    reloaded = Image.open(tmp_path / "w.png")
    assert reloaded.mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "w.png"))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 128, 255])
    # 16-bit TIFF too.
    im.save(tmp_path / "w.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "w.tif"))[0, :, 1], [0, 0, 1, 1, 128, 255])


def test_32bit_int_and_float_modes() -> None:
    ints = Image.fromarray(np.array([[-5, 0, 65535, 70000]], dtype=np.int32), "I")
    buf = io.BytesIO()
    ints.save(buf, "TIFF")
    out = np.asarray(load_image_bytes(buf.getvalue(), "i.tif"))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 0, 255, 255])
    floats = Image.fromarray(np.array([[-1.0, 0.4, 0.6, 254.5, 300.0]], dtype=np.float32), "F")
    buf = io.BytesIO()
    floats.save(buf, "TIFF")
    out = np.asarray(load_image_bytes(buf.getvalue(), "f.tif"))[0, :, 2]
    np.testing.assert_array_equal(out, [0, 0, 1, 254, 255])  # rint: 254.5 -> 254 (half to even)
    bad = Image.fromarray(np.array([[1.0, np.nan]], dtype=np.float32), "F")
    buf = io.BytesIO()
    bad.save(buf, "TIFF")
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image_bytes(buf.getvalue(), "nan.tif")


def test_alpha_is_composited_over_black(tmp_path: Path) -> None:
    px = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))[0].astype(int)
    np.testing.assert_array_equal(out[0], [200, 100, 50])
    np.testing.assert_array_equal(out[1], [0, 0, 0])
    np.testing.assert_allclose(out[2], np.array([200, 100, 50]) * 128 / 255, atol=1)
    la = Image.fromarray(np.array([[[90, 255], [90, 0]]], dtype=np.uint8), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "la.png"))[0], [[90] * 3, [0] * 3])


def test_palette_with_and_without_transparency(tmp_path: Path, rng: np.random.Generator) -> None:
    im = _rgb(rng, 16, 16).quantize(colors=8)
    assert im.mode == "P"
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "p.png")), np.asarray(im.convert("RGB")))
    im.save(tmp_path / "pt.png", transparency=int(np.asarray(im)[0, 0]))
    out = np.asarray(load_image(tmp_path / "pt.png"))
    transparent = np.asarray(im) == np.asarray(im)[0, 0]
    assert (out[transparent] == 0).all()
    np.testing.assert_array_equal(out[~transparent], np.asarray(im.convert("RGB"))[~transparent])


def test_cmyk(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red
    cmyk.save(tmp_path / "c.tif")
    out = np.asarray(load_image(tmp_path / "c.tif"))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    cmyk.save(tmp_path / "c.jpg", quality=95)
    out = np.asarray(load_image(tmp_path / "c.jpg")).astype(int)
    assert out[..., 0].min() > 200 and out[..., 1:].max() < 60


def test_exif_orientation_6_is_rotated(tmp_path: Path, rng: np.random.Generator) -> None:
    base = _rgb(rng, 24, 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(tmp_path / "r.jpg", exif=exif, quality=100, subsampling=0)
    stored = Image.open(tmp_path / "r.jpg").convert("RGB")  # decoded pixels as stored
    out = load_image(tmp_path / "r.jpg")
    assert out.size == (16, 24)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(stored.transpose(Image.Transpose.ROTATE_270)))
    # Orientation 1 (or no tag) leaves the image alone.
    base.save(tmp_path / "n.jpg", quality=100, subsampling=0)
    assert load_image(tmp_path / "n.jpg").size == (24, 16)


# ------------------------------------------------------------------- bad files
def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file") as info:
        load_image(tmp_path / "e.png")
    assert "e.png" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, rng: np.random.Generator, fmt: str) -> None:
    buf = io.BytesIO()
    _rgb(rng, 64, 64).save(buf, fmt)
    data = buf.getvalue()
    path = tmp_path / f"t.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="t\\.") as info:
        load_image(path)
    assert "\n" not in info.value.reason


def test_text_file_with_image_extension(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        load_image(tmp_path / "notes.png")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path / "d.png")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")
    decoded = []
    original_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or original_load(self))
    with pytest.raises(ImageLoadError, match="max_pixels=199"):
        load_image(tmp_path / "big.png", max_pixels=199)
    assert decoded == []
    assert load_image(tmp_path / "big.png", max_pixels=200).size == (20, 10)
    assert DEFAULT_MAX_PIXELS == 89_478_485
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(tmp_path / "big.png", max_pixels=0)


def test_pillow_bomb_error_is_image_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # > 2x -> DecompressionBombError
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # between 1x and 2x -> warning, escalated
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


def test_permission_denied(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "locked.png"
    _rgb(rng).save(path)
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("chmod 0 does not deny reading here (running as root?)")
        with pytest.raises(ImageLoadError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_permission_denied_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same path as above, also covered when the tests run as root."""
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)

    real_open = os.open

    def deny(file, flags, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ImageLoadError, match="locked.png: permission denied"):
        load_image(path)


# ---------------------------------------------------------------- find_images
def test_find_images_sorted_recursive_and_skips(tmp_path: Path) -> None:
    for rel in ["b/2.png", "b/1.JPG", "a.png", "c/d/e.webp", ".hidden/x.png", "b/.x.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(p, format="PNG")
    (tmp_path / "b" / "readme.txt").write_text("x")
    listing = find_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in listing.paths]
    assert rel == ["a.png", "b/1.JPG", "b/2.png", "c/d/e.webp"]
    assert listing.skipped_files == 2  # readme.txt and b/.x.png
    assert listing.problems == []
    flat = find_images(tmp_path, recursive=False)
    assert [p.name for p in flat.paths] == ["a.png"]
    assert is_image_file_name("x.TIFF") and not is_image_file_name("x.gif")
    assert ".png" in IMAGE_EXTENSIONS


def test_find_images_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images(tmp_path / "missing")
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not a folder"):
        find_images(tmp_path / "f.png")


def _symlink(target: Path, link: Path, *, directory: bool = False) -> None:
    try:
        link.symlink_to(target, target_is_directory=directory)
    except (OSError, NotImplementedError) as exc:
        pytest.skip(f"cannot create symbolic links here ({exc})")


def test_broken_symlink_and_file_link(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    _symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    _symlink(tmp_path / "real.png", tmp_path / "alias.png")
    listing = find_images(tmp_path)
    assert [p.name for p in listing.paths] == ["alias.png", "real.png"]
    assert len(listing.problems) == 1
    assert listing.problems[0].path.name == "broken.png"
    assert "broken symbolic link" in listing.problems[0].reason


def test_symlink_loops_are_reported_not_followed(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.new("RGB", (4, 4)).save(sub / "x.png")
    _symlink(tmp_path, sub / "up", directory=True)  # directory cycle
    _symlink(tmp_path / "self", tmp_path / "self")  # self-referencing link (ELOOP)
    listing = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listing.paths] == ["sub/x.png"]
    reasons = {p.path.name: p.reason for p in listing.problems}
    assert "already scanned" in reasons["up"]
    assert "loop" in reasons["self"]


def test_unreadable_folder_is_a_problem(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("chmod 0 does not deny listing here (running as root?)")
        listing = find_images(tmp_path)
        assert listing.paths == []
        assert [p.path.name for p in listing.problems] == ["locked"]
        assert "permission denied" in listing.problems[0].reason
    finally:
        locked.chmod(0o755)


def test_unreadable_folder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = find_images(tmp_path)
    assert [p.name for p in listing.paths] == ["ok.png"]
    assert [(p.path.name, p.reason) for p in listing.problems] == [("locked", "cannot list folder (permission denied)")]


def test_non_utf8_file_name(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"img_\xff\xfe.png")
    try:
        with open(raw, "wb") as fh:
            _rgb(rng).save(fh, "PNG")
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"filesystem refuses non-UTF-8 names ({exc})")
    listing = find_images(tmp_path)
    assert len(listing.paths) == 1
    path = listing.paths[0]
    assert os.fsencode(path) == raw
    assert load_image(path).size == (20, 12)
    shown = display_path(path)
    assert shown.endswith("img_\\xff\\xfe.png")
    shown.encode("utf-8")  # printable
    (Path(os.fsdecode(raw)).parent / os.fsdecode(b"bad_\xff.png")).write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(Path(os.fsdecode(raw)).parent / os.fsdecode(b"bad_\xff.png"))
    str(info.value).encode("utf-8")


# ------------------------------------------------------------------ preprocess
def _hand_preprocess(im: Image.Image, resize: int, crop: "int | None") -> np.ndarray:
    w, h = im.size
    if crop is None:
        im = im.resize((resize, resize), Image.BILINEAR)
    else:
        s = resize / min(w, h)
        nw, nh = (resize, int(h * s)) if w <= h else (int(w * s), resize)
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BILINEAR)
        left = int(round((nw - crop) / 2.0))
        top = int(round((nh - crop) / 2.0))
        im = im.crop((left, top, left + crop, top + crop))
    x = np.asarray(im, dtype=np.float64) / 255.0
    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.transpose(2, 0, 1)


PREPROCESS_CASES = [
    ((300, 200), 64, 56),
    ((40, 90), 64, 64),
    ((10, 10), 32, 24),  # upsampled
    ((39, 32), 32, 32),  # odd margins: round-half-even offsets
    ((32, 39), 32, 32),
    ((50, 30), 32, None),  # full frame
]


@pytest.mark.parametrize("size,resize,crop", PREPROCESS_CASES)
def test_preprocess_matches_hand_computation(rng: np.random.Generator, size, resize, crop) -> None:
    im = _rgb(rng, *size)
    out = preprocess(im, resize=resize, crop=crop)
    side = crop if crop is not None else resize
    assert out.shape == (3, side, side) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, _hand_preprocess(im, resize, crop), atol=2e-6)


def test_preprocess_bits_are_those_of_the_channels_last_float32_formula(rng: np.random.Generator) -> None:
    """Every cached bag depends on these bits: float32 ``pixels * scale + offset`` on (H, W, 3), then CHW."""
    from anomclust_lite.features.preprocess import resize_and_crop

    im = _rgb(rng, 300, 257)
    scale = (1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float64))).astype(np.float32)
    offset = (-np.asarray(IMAGENET_MEAN, dtype=np.float64) / np.asarray(IMAGENET_STD, dtype=np.float64)).astype(
        np.float32)
    pixels = np.asarray(resize_and_crop(im, resize=64, crop=56), dtype=np.float32)
    np.testing.assert_array_equal(preprocess(im, resize=64, crop=56), (pixels * scale + offset).transpose(2, 0, 1))


def test_preprocess_is_exact_crop_when_already_sized(rng: np.random.Generator) -> None:
    im = _rgb(rng, 256, 256)
    out = preprocess(im)
    raw = np.asarray(im, dtype=np.float64)[16:240, 16:240] / 255.0
    expected = ((raw - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=2e-6)


@settings(max_examples=25, deadline=None)
@given(w=st.integers(1, 80), h=st.integers(1, 80), resize=st.integers(8, 40), data=st.data())
def test_preprocess_shapes_any_size(w: int, h: int, resize: int, data) -> None:
    crop = data.draw(st.one_of(st.none(), st.integers(1, resize)))
    out = preprocess(Image.new("RGB", (w, h), (255, 0, 0)), resize=resize, crop=crop)
    side = crop if crop is not None else resize
    assert out.shape == (3, side, side)
    np.testing.assert_allclose(out[0], (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], atol=1e-5)


def test_preprocess_bad_arguments(rng: np.random.Generator) -> None:
    im = _rgb(rng)
    with pytest.raises(ValueError, match="crop"):
        preprocess(im, resize=32, crop=33)
    with pytest.raises(ValueError, match="resize"):
        preprocess(im, resize=0)
    with pytest.raises(ValueError, match="crop"):
        preprocess(im, resize=32, crop=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image"):
        preprocess(im.convert("L"))
    with pytest.raises(ValueError, match="image"):
        preprocess(np.zeros((4, 4, 3)))  # type: ignore[arg-type]

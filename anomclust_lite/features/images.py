"""Finding, decoding and preprocessing image files.

Image policy (what :func:`load_image` does with each file):

- **Formats**: anything Pillow decodes; :func:`find_images` lists the files
  whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive). Hidden
  files and folders (names starting with ``.``) are skipped. Multi-frame files
  (TIFF, WebP) use their first frame.
- **Decompression bombs**: an image with more than ``max_pixels`` pixels
  (default :data:`DEFAULT_MAX_PIXELS` = 89,478,485, Pillow's own default, about
  a 9459 x 9459 image or 256 MiB of RGB at 3 bytes per pixel) is refused
  *before* its pixels are decoded. Pillow's ``DecompressionBombWarning`` and
  ``DecompressionBombError`` are refusals too, so a ``max_pixels`` above
  Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` needs that raised as well (the
  command-line tool's ``--max-pixels`` does it). :func:`preprocess` refuses an
  image whose *resized* size would exceed ``max_pixels`` (a tiny file of
  extreme aspect ratio, e.g. 1 x 1,000,000, would otherwise be upsampled to
  billions of pixels).
- **Orientation**: the EXIF orientation tag (1-8) is applied, so the result
  is the image as a viewer shows it.
- **Colour modes** (the result is always 8-bit RGB):

  ====================  ======================================================
  ``RGB``               kept
  ``L``, ``1``          grey copied to R, G and B (1-bit: 0 or 255)
  ``I;16*``             16-bit grey, mapped to 8 bits by ``round(v / 257)``
                        (so 65535 -> 255, full range to full range)
  ``I``                 32-bit integer grey, read as 16-bit data: clipped to
                        [0, 65535], then ``round(v / 257)``
  ``F``                 32-bit float grey on the 8-bit scale: clipped to
                        [0, 255], rounded (NaN or inf refuse the image)
  ``P``                 palette expanded to RGB
  ``CMYK``, ``YCbCr``   Pillow's conversion to RGB (no ICC colour management)
  with alpha            ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La`` and any
                        image with a ``transparency`` entry are composited over
                        **black**: ``rgb * alpha / 255``; fully transparent
                        pixels become black
  ====================  ======================================================

- **Errors**: an empty, truncated or corrupt file, a non-image with an image
  extension, an unreadable file (permission denied) or a refused image raise
  :class:`ImageLoadError` (a ``ValueError``) naming the file with a one-line
  reason.
- **Small images**: :func:`preprocess` resizes the shorter side to ``resize``
  whatever the original size, so images smaller than the crop are upsampled.

File names need not be valid UTF-8: paths stay :class:`pathlib.Path` objects
(undecodable bytes are kept as surrogate escapes) and :func:`display_path`
gives a printable form that never raises.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from PIL import Image

from ..core.validation import check_int

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLoadError",
    "ImageProblem",
    "ImageListing",
    "display_path",
    "resize_and_crop",
    "is_image_file_name",
    "find_images",
    "load_image",
    "load_image_bytes",
    "preprocess",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions (lower case) that :func:`find_images` lists as images.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: Largest image (width x height) that :func:`load_image` decodes by default:
#: Pillow's own ``Image.MAX_IMAGE_PIXELS`` default, 89,478,485 pixels.
DEFAULT_MAX_PIXELS = 89_478_485

#: ImageNet channel means (RGB) used by :func:`preprocess`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB) used by :func:`preprocess`.
IMAGENET_STD = (0.229, 0.224, 0.225)

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

# ``warnings.catch_warnings`` swaps process-wide state; this lock keeps the
# decoding threads from interleaving their swaps. Only the (cheap, header-only)
# ``Image.open`` runs under it.
_OPEN_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """An image file could not be read; the message names the file and why.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    reason : str
        One line saying what was wrong.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = _one_line(reason)
        super().__init__(f"cannot read image {display_path(self.path)}: {self.reason}")


@dataclass(frozen=True)
class ImageProblem:
    """A file or folder that was skipped, with a one-line reason."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{display_path(self.path)}: {self.reason}"


@dataclass
class ImageListing:
    """Result of :func:`find_images`.

    Attributes
    ----------
    paths : list of pathlib.Path
        Image files, in a deterministic order (sorted by path components).
    skipped_files : int
        Regular files that were not listed because their extension is not an
        image extension or their name is hidden.
    problems : list of ImageProblem
        Broken symbolic links, symbolic-link loops, folders reached twice and
        unreadable folders, in the order met.
    """

    paths: List[Path] = field(default_factory=list)
    skipped_files: int = 0
    problems: List[ImageProblem] = field(default_factory=list)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def display_path(path: "PathLike | bytes") -> str:
    """Return a printable form of ``path`` that never raises on encoding.

    Bytes that are not valid UTF-8 are shown as ``\\xNN`` escapes.

    Examples
    --------
    >>> import os
    >>> display_path(os.fsdecode(b"img_\\xff.png"))
    'img_\\\\xff.png'
    """
    raw = path if isinstance(path, bytes) else os.fsencode(os.fspath(path))
    return raw.decode("utf-8", "backslashreplace")


def is_image_file_name(name: PathLike) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive).

    Examples
    --------
    >>> is_image_file_name("a/B.PNG"), is_image_file_name("notes.txt")
    (True, False)
    """
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: PathLike, *, recursive: bool = True) -> ImageListing:
    """List the image files in ``folder``.

    Symbolic links are followed; every real folder is scanned once, so a link
    loop or a second link to the same folder is reported in
    ``problems`` instead of looping. Broken links and unreadable folders are
    reported too; none of them raise.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder to scan.
    recursive : bool, default True
        Also scan sub-folders.

    Returns
    -------
    ImageListing
        ``paths`` (sorted by path components), ``skipped_files`` and
        ``problems``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        ``folder`` is not a folder.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(d / "a.png")
    >>> _ = (d / "notes.txt").write_text("x")
    >>> listing = find_images(d)
    >>> [p.name for p in listing.paths], listing.skipped_files
    (['a.png'], 1)
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"folder {display_path(root)} does not exist; pass an existing image folder")
    if not root.is_dir():
        raise ValueError(f"folder {display_path(root)} is not a folder; pass the folder that holds the images")

    listing = ImageListing()
    visited: "set[tuple[int, int]]" = set()
    stack = [root]
    found: List[Path] = []
    while stack:
        directory = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            listing.problems.append(ImageProblem(directory, f"cannot open folder ({_os_reason(exc)})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            listing.problems.append(
                ImageProblem(
                    directory,
                    "folder already scanned through another path (symbolic link loop or duplicate link); skipped",
                )
            )
            continue
        visited.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            listing.problems.append(ImageProblem(directory, f"cannot list folder ({_os_reason(exc)})"))
            continue
        subdirs = []
        for entry in entries:
            path = directory / entry.name
            try:
                st_entry = os.stat(entry.path)  # follows links
            except OSError as exc:
                if entry.is_symlink():
                    reason = "symbolic link loop" if _is_loop(exc) else "broken symbolic link"
                    listing.problems.append(ImageProblem(path, f"{reason}; skipped"))
                else:
                    listing.problems.append(ImageProblem(path, f"cannot stat ({_os_reason(exc)}); skipped"))
                continue
            hidden = entry.name.startswith(".")
            if stat.S_ISDIR(st_entry.st_mode):
                if recursive and not hidden:
                    subdirs.append(path)
            elif stat.S_ISREG(st_entry.st_mode):
                if hidden or not is_image_file_name(entry.name):
                    listing.skipped_files += 1
                else:
                    found.append(path)
            else:
                listing.skipped_files += 1
        # Depth-first, in name order.
        stack.extend(reversed(subdirs))
    listing.paths = sorted(found, key=lambda p: p.parts)
    return listing


def _is_loop(exc: OSError) -> bool:
    return exc.errno == errno.ELOOP


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return _one_line(exc.strerror or str(exc))


def load_image(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB image, following the module's image policy.

    Parameters
    ----------
    path : str or os.PathLike
        Image file.
    max_pixels : int, default DEFAULT_MAX_PIXELS
        Refuse images with more pixels (width x height) than this, before
        decoding them.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, EXIF orientation applied.

    Raises
    ------
    ImageLoadError
        The file is missing, unreadable, empty, not an image, corrupt,
        truncated or too large.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "grey.png"
    >>> Image.new("L", (5, 3), 7).save(p)
    >>> im = load_image(p)
    >>> im.mode, im.size, im.getpixel((0, 0))
    ('RGB', (5, 3), (7, 7, 7))
    """
    max_pixels = check_int(max_pixels, "max_pixels", low=1)
    return load_image_bytes(_read_file(path), path, max_pixels=max_pixels)


def _read_file(path: PathLike) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except IsADirectoryError:
        raise ImageLoadError(p, "is a folder, not a file") from None
    except OSError as exc:
        raise ImageLoadError(p, _os_reason(exc)) from exc


def load_image_bytes(data: bytes, path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the bytes of an image file (read from ``path``) like :func:`load_image`.

    ``path`` is only used in error messages.

    Examples
    --------
    >>> buf = io.BytesIO()
    >>> Image.new("RGBA", (2, 2), (200, 100, 50, 0)).save(buf, "PNG")
    >>> load_image_bytes(buf.getvalue(), "mem.png").getpixel((0, 0))
    (0, 0, 0)
    """
    max_pixels = check_int(max_pixels, "max_pixels", low=1)
    if len(data) == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageLoadError(
            path,
            f"refused as a possible decompression bomb (Pillow: {exc}); raise max_pixels and "
            "PIL.Image.MAX_IMAGE_PIXELS (--max-pixels) if the image is genuine",
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not a recognised image format (or a corrupt header)") from exc
    except Exception as exc:  # Pillow raises many types on corrupt headers
        raise ImageLoadError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            path,
            f"image has {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels} "
            "(refused as a possible decompression bomb; raise max_pixels (--max-pixels) if the image is genuine)",
        )
    if width < 1 or height < 1:
        raise ImageLoadError(path, f"image has no pixels ({width}x{height})")
    try:
        image.load()
    except Exception as exc:  # truncated data, bad zlib stream, decoder errors, ...
        raise ImageLoadError(path, f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from exc
    orientation = _exif_orientation(image, path)
    try:
        rgb = _to_rgb(image)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(path, f"cannot convert mode {image.mode!r} to RGB ({exc})") from exc
    if rgb is None:
        raise ImageLoadError(path, f"image mode {image.mode!r} contains NaN or inf values")
    method = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if method is not None:
        rgb = rgb.transpose(method)
    return rgb


def _exif_orientation(image: Image.Image, path: PathLike) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:
        logger.warning("%s: unreadable EXIF data (%s); orientation not applied", display_path(path), _one_line(exc))
        return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        logger.warning("%s: invalid EXIF orientation %r; orientation not applied", display_path(path), value)
        return 1


def _to_rgb(image: Image.Image) -> "Optional[Image.Image]":
    """Convert to 8-bit RGB by the module's policy; ``None`` for non-finite float data."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.float64)
        grey = np.rint(np.clip(values, 0.0, 65535.0) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            return None
        grey = np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def preprocess(
    image: Image.Image,
    *,
    resize: int = 256,
    crop: "Optional[int]" = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Resize, centre-crop and normalise an RGB image into a model input.

    The shorter side is resized to ``resize`` (bilinear, Pillow; the longer
    side is ``int(resize * long / short)``), then the centre ``crop x crop``
    square is cut out (offsets ``round((size - crop) / 2)``), values are scaled
    to [0, 1] and normalised with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.
    With ``crop=None`` the whole image is resized to ``resize x resize``
    instead (aspect ratio not kept, nothing cut off). Images smaller than the
    target are upsampled.

    Parameters
    ----------
    image : PIL.Image.Image
        Mode ``"RGB"`` (as returned by :func:`load_image`).
    resize : int, default 256
        Target length of the shorter side (or of both sides with ``crop=None``).
    crop : int or None, default 224
        Side of the centre crop; ``crop <= resize``.
    max_pixels : int, default DEFAULT_MAX_PIXELS
        Refuse (``ValueError``) an image whose resized size, before the crop,
        would have more pixels than this (an extreme aspect ratio).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(3, crop, crop)`` (``(3, resize, resize)`` with
        ``crop=None``), channels RGB.

    Examples
    --------
    >>> x = preprocess(Image.new("RGB", (300, 200), (124, 116, 104)), resize=32, crop=16)
    >>> x.shape, x.dtype, bool(abs(x).max() < 0.01)
    ((3, 16, 16), dtype('float32'), True)
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image; got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"image must have mode 'RGB'; got {image.mode!r}. Read files with load_image()")
    image = resize_and_crop(image, resize=resize, crop=crop, max_pixels=max_pixels)
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    scale = (1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float64))).astype(np.float32)
    offset = (-np.asarray(IMAGENET_MEAN, dtype=np.float64) / np.asarray(IMAGENET_STD, dtype=np.float64)).astype(
        np.float32
    )
    normalised = pixels * scale + offset
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def resize_and_crop(
    image: Image.Image,
    *,
    resize: int = 256,
    crop: "Optional[int]" = 224,
    resample: int = Image.Resampling.BILINEAR,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """The geometry of :func:`preprocess`: resize the shorter side, cut the centre square.

    The shorter side is resized to ``resize`` (the longer side becomes
    ``int(resize * long / short)``), then the centre ``crop x crop`` square
    is cut out (offsets ``round((size - crop) / 2)``). With ``crop=None`` the
    whole image is resized to ``resize x resize``. Used for model inputs
    (bilinear), heat-map backgrounds and ground-truth masks
    (``resample=Image.Resampling.NEAREST``), so all three stay aligned.

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode.
    resize, crop : int, int or None
        As in :func:`preprocess`; ``crop <= resize``.
    resample : int
        Pillow resampling filter.
    max_pixels : int
        Refuse (``ValueError``) a resized size, before the crop, of more
        pixels than this (an extreme aspect ratio).

    Returns
    -------
    PIL.Image.Image
        ``crop x crop`` (or ``resize x resize`` with ``crop=None``), same mode.

    Examples
    --------
    >>> resize_and_crop(Image.new("L", (300, 200)), resize=32, crop=16).size
    (16, 16)
    """
    resize, crop = _check_resize_crop(resize, crop)
    max_pixels = check_int(max_pixels, "max_pixels", low=1)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image; got {type(image).__name__}")
    width, height = image.size
    if crop is None:
        size = (resize, resize)
    elif width <= height:
        size = (resize, int(resize * height / width))
    else:
        size = (int(resize * width / height), resize)
    if size[0] * size[1] > max_pixels:
        raise ValueError(
            f"resizing the {width}x{height} image to a shorter side of {resize} gives {size[0]}x{size[1]} = "
            f"{size[0] * size[1]} pixels, more than max_pixels={max_pixels} (extreme aspect ratio); "
            "use crop=None (--crop none) to resize the whole frame instead"
        )
    if size != image.size:
        image = image.resize(size, resample)
    if crop is not None:
        width, height = image.size
        top = int(round((height - crop) / 2.0))
        left = int(round((width - crop) / 2.0))
        image = image.crop((left, top, left + crop, top + crop))
    return image


def _check_resize_crop(resize: object, crop: object) -> "tuple[int, Optional[int]]":
    """Validate ``resize`` and ``crop`` (``crop`` may be None); return them as ints."""
    resize_i = check_int(resize, "resize", low=1)
    if crop is None:
        return resize_i, None
    crop_i = check_int(crop, "crop", low=1)
    if crop_i > resize_i:
        raise ValueError(
            f"crop must be <= resize (the crop is cut from the resized image); got crop={crop_i}, resize={resize_i}"
        )
    return resize_i, crop_i

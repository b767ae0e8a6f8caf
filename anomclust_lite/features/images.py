"""Reading and decoding image files: the image policy, and the one function that opens them.

Image policy (what :func:`load_image` does with each file):

- **Formats**: only PNG, JPEG, BMP, TIFF and WebP (:data:`ALLOWED_FORMATS`),
  the formats Pillow decodes itself, recognised by their *content* (magic
  bytes, then ``Image.open(..., formats=ALLOWED_FORMATS)``) whatever the
  extension: an EPS, PDF or any other file named ``x.png`` is refused and never
  reaches a plugin that runs an external program (Ghostscript).
  :func:`~anomclust_lite.features.listing.find_images` lists the files whose
  extension is in :data:`~anomclust_lite.features.listing.IMAGE_EXTENSIONS`
  (case-insensitive). Hidden
  files and folders (names starting with ``.``) are skipped. Multi-frame files
  (TIFF, WebP) use their first frame.
- **Decompression bombs**: an image with more than ``max_pixels`` pixels
  (default :data:`DEFAULT_MAX_PIXELS` = 89,478,485, Pillow's own default, about
  a 9459 x 9459 image or 256 MiB of RGB at 3 bytes per pixel) is refused
  *before* its pixels are decoded. Pillow's ``DecompressionBombWarning`` and
  ``DecompressionBombError`` are refusals too, so a ``max_pixels`` above
  Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` needs that raised as well (the
  command-line tool's ``--max-pixels`` does it).
  :func:`~anomclust_lite.features.preprocess.preprocess` refuses an
  image whose *resized* size would exceed ``max_pixels`` (a tiny file of
  extreme aspect ratio, e.g. 1 x 1,000,000, would otherwise be upsampled to
  billions of pixels).
- **File size**: only regular files are read (a FIFO, device or socket is
  refused when opened, never read, see :mod:`anomclust_lite.files.safe_open`).
  The format is recognised from the file's first 16 bytes; a file of no
  allowed format is refused without reading further, and a file larger than
  :func:`max_image_bytes` for its format (:data:`BYTES_PER_PIXEL` x
  ``max_pixels`` + 16 MiB of metadata) is refused from its size, before the
  rest is read. The per-pixel bounds are the largest legitimate encodings of
  an image of ``max_pixels`` pixels: BMP 4 (32-bit, rows padded to 4 bytes),
  PNG 9 (16-bit RGBA, one filter byte per row, stored deflate blocks), WebP 6
  (lossless or lossy of noise measure 4.0-4.4), JPEG 8 (quality 100 4:4:4
  CMYK noise measures 6.3), TIFF 12 (16-bit RGBA, x1.5 for LZW, which
  expands noise by 1.37). Only the first frame is decoded, so a multi-frame
  file whose other frames take more is refused.
- **Orientation**: the EXIF orientation tag (1-8) is applied, so the result
  is the image as a viewer shows it; any other value, or unreadable EXIF data,
  is ignored with a one-line warning (never an exception).
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
- **Small images**: :func:`~anomclust_lite.features.preprocess.preprocess` resizes the shorter side to ``resize``
  whatever the original size, so images smaller than the crop are upsampled.

File names need not be valid UTF-8: paths stay :class:`pathlib.Path` objects
(undecodable bytes are kept as surrogate escapes) and :func:`display_path`
gives a printable form that never raises.

Every image file is opened by :func:`read_image_file` (bytes) and decoded by
:func:`load_image_bytes`; :func:`load_image` does both.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from ..core.validation import check_int
from ..files.safe_open import UnsafeFileError, read_regular
from ..files.safe_text import display_path

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "BYTES_PER_PIXEL",
    "max_image_bytes",
    "ImageLoadError",
    "ImageProblem",
    "display_path",
    "os_error_reason",
    "read_image_file",
    "load_image",
    "load_image_bytes",
    "sniff_format",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Largest image (width x height) that :func:`load_image` decodes by default:
#: Pillow's own ``Image.MAX_IMAGE_PIXELS`` default, 89,478,485 pixels.
DEFAULT_MAX_PIXELS = 89_478_485

#: The Pillow formats that are decoded; every other format is refused by content.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")

#: Most bytes per pixel a legitimate file of each format takes (see the module docstring).
BYTES_PER_PIXEL = {"BMP": 4, "PNG": 9, "WEBP": 6, "JPEG": 8, "TIFF": 12}
_METADATA_BYTES = 16 << 20

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)

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


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def os_error_reason(exc: OSError) -> str:
    """A short reason for an ``OSError`` while reading a file or folder.

    Examples
    --------
    >>> os_error_reason(PermissionError(13, "Permission denied"))
    'permission denied'
    """
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
    return load_image_bytes(read_image_file(path, max_pixels=max_pixels), path, max_pixels=max_pixels)


def max_image_bytes(max_pixels: int = DEFAULT_MAX_PIXELS, image_format: "Optional[str]" = None) -> int:
    """Largest image file read: ``BYTES_PER_PIXEL[image_format] * max_pixels`` + 16 MiB of metadata.

    ``image_format`` None: the largest over the allowed formats (TIFF's).

    Examples
    --------
    >>> max_image_bytes(DEFAULT_MAX_PIXELS, "PNG") // 2**20, max_image_bytes(DEFAULT_MAX_PIXELS) // 2**20
    (783, 1039)
    """
    per_pixel = max(BYTES_PER_PIXEL.values()) if image_format is None else BYTES_PER_PIXEL[image_format]
    return per_pixel * int(max_pixels) + _METADATA_BYTES


def read_image_file(
    path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: "Optional[int]" = None
) -> bytes:
    """The bytes of an image file; every image file the library reads is opened here.

    Only a regular file is read (opened non-blocking and checked on the opened
    descriptor). Its format is recognised from its first bytes (a file of no
    allowed format is refused there) and it is read only if it has at most
    ``max_image_bytes(max_pixels, format)`` bytes (``max_bytes``, when given,
    lowers that limit).

    Raises
    ------
    ImageLoadError
        The file is missing, a folder, not a regular file (FIFO, device,
        socket), of no allowed format, too large for its format or unreadable.

    Examples
    --------
    >>> read_image_file("/nonexistent/a.png")
    Traceback (most recent call last):
    ...
    anomclust_lite.features.images.ImageLoadError: cannot read image /nonexistent/a.png: file not found
    """
    p = Path(path)
    max_pixels = check_int(max_pixels, "max_pixels", low=1)
    limit = max_image_bytes(max_pixels)
    if max_bytes is not None:
        limit = min(limit, check_int(max_bytes, "max_bytes", low=1))

    def cap_for_head(head: bytes) -> int:
        image_format = sniff_format(head)
        if image_format is None:
            raise ImageLoadError(p, _UNKNOWN_FORMAT if head else "empty file (0 bytes)")
        return max_image_bytes(max_pixels, image_format)

    try:
        return read_regular(p, limit, cap_for_head=cap_for_head)
    except UnsafeFileError as exc:
        raise ImageLoadError(p, exc.reason) from None
    except OSError as exc:
        raise ImageLoadError(p, os_error_reason(exc)) from exc


_UNKNOWN_FORMAT = "not a recognised image format (by its content: not a PNG, JPEG, BMP, TIFF or WebP file); refused"


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
    if sniff_format(data) is None:
        raise ImageLoadError(path, _UNKNOWN_FORMAT)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
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


def sniff_format(data: bytes) -> "Optional[str]":
    """The allowed format ``data`` starts like (magic bytes), or None.

    Examples
    --------
    >>> sniff_format(b"%!PS-Adobe-3.0 EPSF-3.0"), sniff_format(b"\\x89PNG\\r\\n\\x1a\\n....")
    (None, 'PNG')
    """
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _exif_orientation(image: Image.Image, path: PathLike) -> int:
    """The EXIF orientation (1-8); anything else is ignored (1) with a one-line warning."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:
        logger.warning("%s: unreadable EXIF data (%s); orientation not applied", display_path(path), _one_line(exc))
        return 1
    if isinstance(value, int) and 1 <= value <= 8:
        return value
    shown = _one_line(repr(value))[:40]
    logger.warning("%s: invalid EXIF orientation %s (not 1-8); orientation not applied", display_path(path), shown)
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

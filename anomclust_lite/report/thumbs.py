"""Thumbnails of the report: the model's view of an image, small, encoded once as a ``data:`` URI.

Every image is embedded once, at :data:`THUMBNAIL_SIZE` pixels on its longer
side, as WebP (about 2-3 kB for a 160 px photo of a part; JPEG is about twice
that). The page shows the same bytes in the gallery, on the map and, scaled
up, in the zoom view, where the heat map and the mask outline are drawn over
it at this resolution.
"""

from __future__ import annotations

import base64
import io
from typing import Optional, Tuple

from PIL import Image

from ..core.validation import check_choice, check_int
from .heatmap import model_view

__all__ = ["THUMBNAIL_SIZE", "FORMATS", "image_data_uri", "shrink", "fit_size", "thumbnail_uri", "placeholder"]

#: Longer side of the embedded thumbnails, in pixels.
THUMBNAIL_SIZE = 160
#: Image formats :func:`image_data_uri` writes.
FORMATS = ("WEBP", "JPEG", "PNG")
_MIME = {"WEBP": "webp", "JPEG": "jpeg", "PNG": "png"}


def image_data_uri(image: Image.Image, *, fmt: str = "WEBP", quality: int = 80) -> str:
    """Encode a PIL image as a base64 ``data:`` URI.

    Parameters
    ----------
    image : PIL.Image.Image
        Converted to RGB for WebP and JPEG.
    fmt : {"WEBP", "JPEG", "PNG"}, default "WEBP"
    quality : int, default 80
        WebP/JPEG quality (1-95).

    Returns
    -------
    str
        ``"data:image/webp;base64,..."`` (or ``jpeg``, ``png``).

    Examples
    --------
    >>> from PIL import Image
    >>> image_data_uri(Image.new("RGB", (4, 4)), fmt="PNG")[:22]
    'data:image/png;base64,'
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image; got {type(image).__name__}")
    fmt = check_choice(fmt, "fmt", FORMATS)
    quality = check_int(quality, "quality", low=1, high=95)
    buf = io.BytesIO()
    if fmt == "PNG":
        image.save(buf, format="PNG", optimize=True)
    else:
        image.convert("RGB").save(buf, format=fmt, quality=quality)
    return f"data:image/{_MIME[fmt]};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def shrink(image: Image.Image, size: int = THUMBNAIL_SIZE) -> Image.Image:
    """``image`` scaled so that its longer side is ``size`` pixels (never enlarged).

    Examples
    --------
    >>> from PIL import Image
    >>> shrink(Image.new("RGB", (320, 200)), 160).size
    (160, 100)
    """
    return image.resize(fit_size(image.size, size), Image.Resampling.LANCZOS)


def fit_size(view_size: Tuple[int, int], size: int = THUMBNAIL_SIZE) -> Tuple[int, int]:
    """Pixel size of ``view_size`` scaled so that its longer side is at most ``size``.

    Examples
    --------
    >>> fit_size((320, 200), 160), fit_size((20, 10), 160)
    ((160, 100), (20, 10))
    """
    size = check_int(size, "size", low=1)
    w, h = view_size
    scale = min(1.0, size / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def placeholder(size: int = THUMBNAIL_SIZE) -> Image.Image:
    """A grey square that stands in for an image that could not be read."""
    return Image.new("RGB", (size, size), (200, 200, 200))


def thumbnail_uri(image: Optional[Image.Image], *, resize: int, crop: Optional[int],
                  size: int = THUMBNAIL_SIZE) -> str:
    """The model's view of ``image`` (see :func:`model_view`) as a ``size``-pixel WebP ``data:`` URI.

    ``image=None`` (an image that could not be read) gives a grey square.

    Examples
    --------
    >>> from PIL import Image
    >>> thumbnail_uri(Image.new("RGB", (300, 200)), resize=256, crop=224)[:23]
    'data:image/webp;base64,'
    """
    view = placeholder(size) if image is None else shrink(model_view(image, resize=resize, crop=crop), size)
    return image_data_uri(view, fmt="WEBP", quality=80)

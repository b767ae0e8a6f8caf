"""Model inputs from decoded images: resize the shorter side, centre-crop, ImageNet normalisation.

:func:`resize_and_crop` is the geometry alone, shared by model inputs,
heat-map backgrounds and ground-truth masks so all three stay aligned.
Images smaller than the target are upsampled.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from ..core.validation import check_int
from .images import DEFAULT_MAX_PIXELS

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "check_resize_crop", "preprocess", "resize_and_crop"]

#: ImageNet channel means (RGB) used by :func:`preprocess`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations (RGB) used by :func:`preprocess`.
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        Mode ``"RGB"`` (as returned by :func:`~anomclust_lite.features.images.load_image`).
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
    scale = (1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float64))).astype(np.float32)
    offset = (-np.asarray(IMAGENET_MEAN, dtype=np.float64) / np.asarray(IMAGENET_STD, dtype=np.float64)).astype(
        np.float32
    )
    # Channels first, then scaled and shifted one channel plane at a time: the same float32 products and
    # sums as on (H, W, 3) pixels, without NumPy's slow inner loops of length 3.
    normalised = np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy()
    normalised *= scale[:, None, None]
    normalised += offset[:, None, None]
    return normalised


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
    resize, crop = check_resize_crop(resize, crop)
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


def check_resize_crop(resize: object, crop: object) -> "tuple[int, Optional[int]]":
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
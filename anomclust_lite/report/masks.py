"""Ground-truth defect masks of MVTec-style folders, drawn as outlines over the thumbnails.

MVTec AD keeps the masks beside the test images::

    CATEGORY/test/TYPE/NAME.png  ->  CATEGORY/ground_truth/TYPE/NAME_mask.png

:func:`mask_path` finds that file for an image when it exists;
:func:`mask_outline_uri` cuts the mask like the model's view, shrinks it to
the thumbnail and keeps its boundary, as a transparent PNG the page lays over
the zoomed image. Mask files are read like any image (through
:func:`anomclust_lite.datasets.load_mask`: size limit, hostile files refused).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .thumbs import image_data_uri

__all__ = ["OUTLINE_RGBA", "mask_path", "mask_outline", "mask_outline_uri"]

#: Colour of the drawn outline (magenta, visible over parts and over the heat map's colours).
OUTLINE_RGBA = (255, 0, 255, 255)


def mask_path(image_path: "str | os.PathLike[str]") -> Optional[Path]:
    """The MVTec ground-truth mask of ``image_path``, or None when there is none.

    Examples
    --------
    >>> mask_path("/nowhere/bottle/test/good/000.png") is None
    True
    """
    p = Path(image_path)
    parts = p.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] != "test":
            continue
        rest = parts[i + 1:-1]
        candidate = Path(*parts[:i], "ground_truth", *rest, f"{p.stem}_mask.png")
        return candidate if candidate.is_file() else None
    return None


def mask_outline(mask: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """RGBA image of ``size``: the boundary of the mask's white region, transparent elsewhere.

    Examples
    --------
    >>> from PIL import Image
    >>> m = Image.new("L", (8, 8)); m.paste(255, (2, 2, 6, 6))
    >>> out = np.asarray(mask_outline(m, (8, 8)))
    >>> int(out[2, 2, 3]), int(out[3, 3, 3]), int(out[0, 0, 3])
    (255, 0, 0)
    """
    inside = np.asarray(mask.convert("L").resize(size, Image.Resampling.BILINEAR)) >= 128
    padded = np.pad(inside, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    edge = inside & ~interior
    out = np.zeros(edge.shape + (4,), dtype=np.uint8)
    out[edge] = OUTLINE_RGBA
    return Image.fromarray(out, mode="RGBA")


def mask_outline_uri(image_path: "str | os.PathLike[str]", *, resize: int, crop: Optional[int],
                     size: Tuple[int, int]) -> Optional[str]:
    """PNG ``data:`` URI of the outline of ``image_path``'s ground-truth mask at thumbnail ``size``.

    The mask is read and cut like the model's input by
    :func:`anomclust_lite.datasets.load_mask`. None when the image has no mask,
    the mask cannot be read, or it is empty (MVTec's good images have none).
    """
    from ..datasets import load_mask

    path = mask_path(image_path)
    if path is None:
        return None
    try:
        mask = load_mask(path, resize=resize, crop=crop)
    except (ValueError, OSError):  # unreadable or hostile mask files are skipped, not fatal
        return None
    outline = mask_outline(Image.fromarray(mask.astype(np.uint8) * 255), size)
    if not np.asarray(outline)[..., 3].any():
        return None
    return image_data_uri(outline, fmt="PNG")


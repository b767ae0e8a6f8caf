"""Memory checks made before the long work, against the ``memory_mb`` budget (``--memory-mb``).

One implementation for the library (:class:`~anomclust_lite.features.extractor.Extractor`
checks both at construction) and the command line (which builds an Extractor
with ``--memory-mb``):

- :func:`check_input_batch`: a batch of preprocessed model inputs
  (``batch x 3 x S x S`` float32, ``S`` the crop, or the resize without a crop)
  may take at most the larger of ``memory_mb`` and
  :data:`~anomclust_lite.core.defaults.MIN_INPUT_BATCH_MB`; checked before the
  model is opened.
- :func:`check_patch_grid`: scoring one image pair (the smallest task of the
  kernels, :func:`~anomclust_lite.core.kernel.pair_bytes`) must fit
  ``memory_mb``; checked once the model's patch grid is known (one run on a
  blank image), before any image is read.

Messages name both the library argument and the command-line option.
"""

from __future__ import annotations

from typing import Optional

from ..core.defaults import MIN_INPUT_BATCH_MB
from ..core.kernel import pair_bytes

__all__ = ["check_input_batch", "check_patch_grid"]

_MIB = 2**20


def _sizes(resize: int, crop: Optional[int]) -> str:
    return f"resize={resize}, crop={crop} (--resize/--crop)"


def check_input_batch(resize: int, crop: Optional[int], batch: int, memory_mb: float) -> None:
    """Refuse sizes whose batch of ``batch`` model inputs exceeds ``max(memory_mb, MIN_INPUT_BATCH_MB)`` MiB.

    Examples
    --------
    >>> check_input_batch(256, 224, 8, 512.0)
    >>> check_input_batch(9000, 9000, 8, 512.0)
    Traceback (most recent call last):
    ...
    ValueError: resize=9000, crop=9000 (--resize/--crop) make a batch of 8 model inputs of 7416 MiB, more than 512 MiB (the larger of memory_mb (--memory-mb) and 64 MiB); use smaller sizes or raise memory_mb
    """
    side = crop if crop is not None else resize
    need = batch * 3 * side * side * 4
    limit = max(float(memory_mb), MIN_INPUT_BATCH_MB)
    if need > limit * _MIB:
        raise ValueError(
            f"{_sizes(resize, crop)} make a batch of {batch} model inputs of {need / _MIB:.0f} MiB, more than "
            f"{limit:g} MiB (the larger of memory_mb (--memory-mb) and {MIN_INPUT_BATCH_MB:g} MiB); "
            "use smaller sizes or raise memory_mb"
        )


def check_patch_grid(resize: int, crop: Optional[int], grid: "tuple[int, int]", dim: int, memory_mb: float) -> None:
    """Refuse a patch grid for which scoring one image pair exceeds ``memory_mb`` MiB.

    Examples
    --------
    >>> check_patch_grid(256, 224, (28, 28), 512, 512.0)
    >>> check_patch_grid(4000, 4000, (500, 500), 128, 512.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: resize=4000, crop=4000 (--resize/--crop) give 500x500 = 250000 patches of 128 dims per image; scoring one image pair needs ... MiB, more than memory_mb (--memory-mb) 512; use smaller sizes or raise memory_mb
    """
    h, w = grid
    need = pair_bytes(h * w, dim)
    if need > float(memory_mb) * _MIB:
        raise ValueError(
            f"{_sizes(resize, crop)} give {h}x{w} = {h * w} patches of {dim} dims per image; scoring one image "
            f"pair needs {need / _MIB:.0f} MiB, more than memory_mb (--memory-mb) {float(memory_mb):g}; "
            "use smaller sizes or raise memory_mb"
        )

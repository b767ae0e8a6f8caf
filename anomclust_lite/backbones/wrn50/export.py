"""Checkpoint file -> WRN-50-2 layer-2 ONNX model: written to a path, and/or kept as a named backbone.

:func:`build_wrn50_backbone` is what ``anomclust-lite backbones build wrn50``
and ``tools/export_wrn50.py`` run. Issue 19's rule: only torchvision's
checksum-verified checkpoint becomes the cached default ``wrn50``; a model
from any other checkpoint (``allow_unverified``) goes only where ``out``
says, or into the cache under a ``name`` of its own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from ...files.atomic import atomic_write_bytes
from ...files.user_cache import user_cache_dir
from ..store import WRN50_NAME, check_backbone_name, store_model
from ..torch_checkpoint import load_state_dict
from .download import WRN50_CHECKPOINT_FILENAME, WRN50_SHA256_PREFIX, download_checkpoint, verify_checkpoint
from .onnx_graph import WRN50_BACKBONE_ID, build_wrn50_layer2_onnx

__all__ = ["WRN50_ONNX_FILENAME", "Wrn50Build", "export_wrn50_onnx", "build_wrn50_backbone"]

logger = logging.getLogger(__name__)

#: File name of the model written by older versions into the cache folder (no longer read).
WRN50_ONNX_FILENAME = "wrn50_layer2.onnx"

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Wrn50Build:
    """What :func:`build_wrn50_backbone` did."""

    checkpoint: Path
    checkpoint_sha256: str
    verified: bool
    out: Optional[Path]
    name: Optional[str]
    stored: Optional[Path]


def _model_bytes(checkpoint: Path, digest: str) -> bytes:
    verified = digest.startswith(WRN50_SHA256_PREFIX)
    meta = {"anomclust_lite.checkpoint_sha256": digest, "anomclust_lite.checkpoint_verified": "1" if verified else "0"}
    return build_wrn50_layer2_onnx(load_state_dict(checkpoint), metadata=meta)


def export_wrn50_onnx(checkpoint: PathLike, out: PathLike, *, allow_unverified: bool = False) -> Path:
    """Checkpoint file -> verified, loaded, built and saved ONNX model (nothing goes into the cache).

    Parameters
    ----------
    checkpoint : str or os.PathLike
        torchvision's ``wide_resnet50_2-95faca4d.pth`` (or, with
        ``allow_unverified``, any ``torch.save`` file of the same
        architecture).
    out : str or os.PathLike
        Where to write the ``.onnx`` file; written atomically; parent
        directories are created.
    allow_unverified : bool
        Accept a checkpoint whose SHA-256 does not match (logs a warning).

    Returns
    -------
    pathlib.Path
        ``out``. The model records the checkpoint's digest in metadata
        ``anomclust_lite.checkpoint_sha256`` and whether it matched in
        ``anomclust_lite.checkpoint_verified`` (``"1"``/``"0"``).

    Raises
    ------
    ChecksumError, UnsafeCheckpointError, ValueError, FileNotFoundError
        See :func:`~anomclust_lite.backbones.wrn50.download.verify_checkpoint`,
        :func:`~anomclust_lite.backbones.torch_checkpoint.load_state_dict`
        and :func:`~anomclust_lite.backbones.wrn50.onnx_graph.build_wrn50_layer2_onnx`.

    Examples
    --------
    >>> export_wrn50_onnx("missing.pth", "out.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint 'missing.pth' does not exist or is not a file
    """
    if not isinstance(allow_unverified, bool):
        raise ValueError(f"allow_unverified must be True or False; got {allow_unverified!r}")
    out_p = Path(os.fspath(out))
    digest = verify_checkpoint(checkpoint, allow_unverified=allow_unverified)
    payload = _model_bytes(Path(os.fspath(checkpoint)), digest)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_p, payload)
    logger.info("wrote %s (%.1f MB)", out_p, len(payload) / 1e6)
    return out_p


def _checkpoint(
    checkpoint: "Optional[PathLike]", cache: Path, progress: "Optional[Callable[[int, Optional[int]], None]]"
) -> Path:
    """The given checkpoint, else torchvision's in the cache, downloaded there if missing."""
    if checkpoint is not None:
        return Path(os.fspath(checkpoint))
    cached = cache / WRN50_CHECKPOINT_FILENAME
    if cached.is_file():
        logger.info("using the cached checkpoint %s", cached)
        return cached
    return Path(download_checkpoint(cached, progress=progress))


def build_wrn50_backbone(
    checkpoint: "Optional[PathLike]" = None,
    *,
    allow_unverified: bool = False,
    name: "Optional[str]" = None,
    out: "Optional[PathLike]" = None,
    store: bool = True,
    progress: "Optional[Callable[[int, Optional[int]], None]]" = None,
    cache_dir: "Optional[PathLike]" = None,
) -> Wrn50Build:
    """Build WRN-50-2 layer 2 and put it where it may go.

    Parameters
    ----------
    checkpoint : str or os.PathLike, optional
        A ``wide_resnet50_2`` checkpoint; default torchvision's, from the
        cache folder or downloaded there (263 MB, SHA-256 checked).
    allow_unverified : bool
        Accept a checkpoint that is not torchvision's (your own weights).
    name : str, optional
        Keep the model in the cache as backbone ``name`` (``--backbone name``).
        Default: ``"wrn50"`` when the checkpoint is verified and ``store`` is
        true, else none. ``"wrn50"`` itself needs a verified checkpoint.
    out : str or os.PathLike, optional
        Also (or only) write the model there.
    store : bool
        False: never put the model in the cache (``out`` is then required).

    Raises
    ------
    ValueError
        Nowhere to put the model (an unverified checkpoint without ``name``
        or ``out``), an unverified checkpoint built as ``wrn50``, or a bad
        name; :class:`~anomclust_lite.backbones.wrn50.download.ChecksumError`
        for a mismatch without ``allow_unverified``; download and checkpoint
        errors as in :func:`export_wrn50_onnx`.

    Examples
    --------
    Arguments are checked before any checkpoint is read or downloaded:

    >>> build_wrn50_backbone(name="my model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a backbone name must be 1-64 characters of a-z, 0-9, '_', '.', '-', ...; got 'my model'
    """
    if name is not None:
        check_backbone_name(name)
        if not store:
            raise ValueError("name and store=False contradict each other")
    cache = Path(os.fspath(cache_dir)) if cache_dir is not None else user_cache_dir()
    ckpt = _checkpoint(checkpoint, cache, progress)
    digest = verify_checkpoint(ckpt, allow_unverified=allow_unverified)
    verified = digest.startswith(WRN50_SHA256_PREFIX)
    target = name if name is not None else (WRN50_NAME if verified and store else None)
    if target == WRN50_NAME and not verified:
        raise ValueError(
            f"checkpoint {str(ckpt)!r} is not torchvision's (SHA-256 {digest[:16]}...), so it cannot become the "
            f"default {WRN50_NAME!r} backbone; give it a name of its own with --name NAME (then --backbone NAME)"
        )
    if target is None and out is None:
        raise ValueError(
            f"checkpoint {str(ckpt)!r} is not torchvision's verified checkpoint, so it is not cached by default; "
            "pass --name NAME to keep it in the cache (then --backbone NAME) or --out PATH.onnx (then --model PATH.onnx)"
        )
    data = _model_bytes(ckpt, digest)
    out_p = None if out is None else Path(os.fspath(out))
    if out_p is not None:
        out_p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_p, data)
    stored = None
    if target is not None:
        stored = store_model(target, data, architecture=f"{WRN50_BACKBONE_ID} (WideResNet-50-2 layer 2, stride 8, 512 channels)",
                             source=str(ckpt.resolve()), source_sha256=digest, verified=verified, cache_dir=cache)
    return Wrn50Build(ckpt, digest, verified, out_p, target, stored)

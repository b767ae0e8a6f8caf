"""Checkpoint file -> saved ONNX model, and the copy of a built model in the user cache."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Union

from ...files.atomic import atomic_open, atomic_write_bytes
from ...files.user_cache import user_cache_dir
from ..torch_checkpoint import load_state_dict
from .download import WRN50_SHA256_PREFIX, verify_checkpoint
from .onnx_graph import build_wrn50_layer2_onnx, import_onnx

__all__ = ["WRN50_ONNX_FILENAME", "export_wrn50_onnx", "cache_wrn50_onnx"]

logger = logging.getLogger(__name__)

#: File name of the exported model in the cache directory.
WRN50_ONNX_FILENAME = "wrn50_layer2.onnx"

PathLike = Union[str, "os.PathLike[str]"]


def export_wrn50_onnx(checkpoint: PathLike, out: PathLike, *, allow_unverified: bool = False) -> Path:
    """Checkpoint file -> verified, loaded, built and saved ONNX model.

    Parameters
    ----------
    checkpoint : str or os.PathLike
        torchvision's ``wide_resnet50_2-95faca4d.pth`` (or, with
        ``allow_unverified``, any ``torch.save`` file of the same
        architecture).
    out : str or os.PathLike
        Where to write the ``.onnx`` file; written atomically (temporary
        file + ``os.replace``); parent directories are created.
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
    ChecksumError, UnsafeCheckpointError, ValueError, FileNotFoundError, ImportError
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
    import_onnx()
    model = build_wrn50_layer2_onnx(load_state_dict(checkpoint))
    from onnx import helper

    props = {p.key: p.value for p in model.metadata_props}
    props["anomclust_lite.checkpoint_sha256"] = digest
    props["anomclust_lite.checkpoint_verified"] = "1" if digest.startswith(WRN50_SHA256_PREFIX) else "0"
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    payload = model.SerializeToString()
    atomic_write_bytes(out_p, payload)
    logger.info("wrote %s (%.1f MB)", out_p, len(payload) / 1e6)
    return out_p


def cache_wrn50_onnx(onnx_path: PathLike) -> Path:
    """Copy an exported model to ``user_cache_dir() / "wrn50_layer2.onnx"`` (atomically).

    Parameters
    ----------
    onnx_path : str or os.PathLike
        A model written by :func:`export_wrn50_onnx`.

    Returns
    -------
    pathlib.Path
        The cached copy (``onnx_path`` itself if it already is that file).

    Examples
    --------
    >>> cache_wrn50_onnx("missing.onnx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: onnx_path 'missing.onnx' does not exist or is not a file
    """
    src = Path(os.fspath(onnx_path))
    if not src.is_file():
        raise FileNotFoundError(f"onnx_path {str(src)!r} does not exist or is not a file")
    cache = user_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / WRN50_ONNX_FILENAME
    if dest.exists() and os.path.samefile(src, dest):
        return dest
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    logger.info("cached %s as %s", src, dest)
    return dest

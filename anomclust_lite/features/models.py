"""Finding the ONNX feature-extractor model to use.

:func:`resolve_backbone` looks, in this order, at

1. the path passed in (``--model PATH``);
2. a backbone name (``--backbone NAME``: ``resnet50v2``, ``wrn50`` or a name
   given at ``anomclust-lite backbones build wrn50 --name NAME``);
3. the environment variable ``ANOMCLUST_MODEL`` (a path);
4. the embedded default backbone, ResNet-50 v2 layer 2, shipped inside the
   package: no download, no ``onnx`` package.

A path in 1 or 3 that does not exist is an error, never skipped; so is a
backbone name that is unknown, not built yet, or whose cached model does not
match its provenance record (:mod:`anomclust_lite.backbones.store`). Nothing
is ever downloaded here: ``anomclust-lite backbones build wrn50`` does that.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

from ..backbones.store import DEFAULT_BACKBONE, Backbone, BackboneNotReadyError, get_backbone, model_backbone
from .images import display_path

__all__ = ["MODEL_ENV", "ModelNotFoundError", "resolve_backbone", "resolve_model", "check_model_unchanged"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable holding the path of an ONNX model.
MODEL_ENV = "ANOMCLUST_MODEL"


class ModelNotFoundError(FileNotFoundError):
    """No usable ONNX model: the message says which and how to provide one."""


def resolve_backbone(
    model: "Optional[PathLike]" = None,
    *,
    backbone: "Optional[str]" = None,
    cache_dir: "Optional[PathLike]" = None,
) -> Backbone:
    """The backbone to use (see the module docstring for the order), ready to load.

    Parameters
    ----------
    model : str or os.PathLike, optional
        Explicit model path; must exist.
    backbone : str, optional
        A backbone name; not together with ``model``.
    cache_dir : str or os.PathLike, optional
        User cache folder; default ``anomclust_lite.files.user_cache.user_cache_dir()``.

    Returns
    -------
    anomclust_lite.backbones.store.Backbone
        With ``path`` an existing ``.onnx`` file, and where it came from.

    Raises
    ------
    ModelNotFoundError
        A path that does not exist, or a backbone that is not ready (the
        message names the command that builds it).
    ValueError
        Both ``model`` and ``backbone``, or a malformed backbone name.

    Examples
    --------
    >>> import tempfile
    >>> resolve_backbone(cache_dir=tempfile.mkdtemp()).name
    'resnet50v2'
    """
    if model is not None and backbone is not None:
        raise ValueError("pass either a model path or a backbone name, not both")
    if model is not None:
        return model_backbone(_existing_model(Path(model), "model"), "given as --model / Extractor(model=...)")
    if backbone is None and os.environ.get(MODEL_ENV, ""):
        path = _existing_model(Path(os.environ[MODEL_ENV]), f"${MODEL_ENV}")
        return model_backbone(path, f"${MODEL_ENV}")
    try:
        chosen = get_backbone(DEFAULT_BACKBONE if backbone is None else backbone, cache_dir)
    except BackboneNotReadyError as exc:
        raise ModelNotFoundError(str(exc)) from exc
    logger.info("using backbone %s: %s", chosen.name, chosen.origin)
    return chosen


def resolve_model(
    model: "Optional[PathLike]" = None,
    *,
    backbone: "Optional[str]" = None,
    cache_dir: "Optional[PathLike]" = None,
) -> Path:
    """The path of the ONNX model :func:`resolve_backbone` chooses.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "m.onnx"
    >>> _ = p.write_bytes(b"")
    >>> resolve_model(p) == p
    True
    """
    path = resolve_backbone(model, backbone=backbone, cache_dir=cache_dir).path
    assert path is not None  # a ready backbone has a file
    return path


def _existing_model(path: Path, source: str) -> Path:
    if path.is_file():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{source} {display_path(path)} is not a file; pass the path of an .onnx model")
    raise ModelNotFoundError(
        f"{source} {display_path(path)} does not exist; pass the path of an existing .onnx model, or leave it out "
        "to use the built-in backbone (`anomclust-lite backbones` lists the others)"
    )


_EMBEDDED_FILE = re.compile(r"resnet50v2_layer2-([0-9a-f]{16})\.onnx\Z")


def check_model_unchanged(info: Backbone, model_sha256: str) -> None:
    """Refuse a backbone whose model bytes that were read differ from the ones checked when it was resolved.

    A built backbone's provenance record holds its model's SHA-256; the
    embedded backbone's cached file is named after the first 16 hex digits of
    its own. The model is read once, after that check
    (:class:`~anomclust_lite.features.onnx_session.BackboneSession`): a file
    replaced in between is refused here, not run.
    """
    expected = info.record.get("model_sha256") if isinstance(info.record, dict) else None
    match = _EMBEDDED_FILE.match(info.path.name) if info.path is not None and not expected else None
    prefix = match.group(1) if match else None
    if (isinstance(expected, str) and expected != model_sha256) or (prefix and not model_sha256.startswith(prefix)):
        raise ValueError(
            f"backbone {info.name!r}: its model file {display_path(info.path)} changed after it was checked "
            f"(sha256 {model_sha256[:16]}...); refused. Run it again, or rebuild it with "
            f"'anomclust-lite backbones build {info.name}'"
        )

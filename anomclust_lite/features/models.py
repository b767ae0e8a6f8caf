"""Finding the ONNX feature-extractor model to use.

:func:`resolve_model` looks, in this order, at

1. the path passed in (``--model PATH``);
2. the environment variable ``ANOMCLUST_MODEL``;
3. ``wrn50_layer2.onnx`` in the user cache folder
   (``$ANOMCLUST_CACHE``, else ``$XDG_CACHE_HOME/anomclust_lite``, else
   ``~/.cache/anomclust_lite``);
4. the torchvision checkpoint ``wide_resnet50_2-95faca4d.pth`` in that cache
   folder, from which the ONNX model is built (needs the ``onnx`` package);
5. a download of that checkpoint (263 MB), then the build, unless downloads
   are disabled (``allow_download=False`` or ``ANOMCLUST_OFFLINE=1``).

The first source that exists wins; a path given in 1 or 2 that does not exist
is an error, never skipped. When nothing is found a single
:class:`ModelNotFoundError` says how to provide a model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Union

from ..backbones import wrn50
from ..files.user_cache import user_cache_dir
from .images import display_path

__all__ = [
    "MODEL_ENV",
    "OFFLINE_ENV",
    "MODEL_FILE_NAME",
    "CHECKPOINT_FILE_NAME",
    "ModelNotFoundError",
    "downloads_disabled",
    "resolve_model",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable holding the path of an ONNX model.
MODEL_ENV = "ANOMCLUST_MODEL"
#: Environment variable that disables every download when set to anything but ``""``/``"0"``.
OFFLINE_ENV = "ANOMCLUST_OFFLINE"
#: File name of the built WideResNet-50-2 layer-2 model in the user cache folder.
MODEL_FILE_NAME = wrn50.WRN50_ONNX_FILENAME
#: File name of the torchvision ImageNet checkpoint of WideResNet-50-2.
CHECKPOINT_FILE_NAME = wrn50.WRN50_CHECKPOINT_FILENAME

_HOW_TO = (
    "Provide a model in one of these ways: pass --model PATH (Extractor(model=PATH)); "
    f"set {MODEL_ENV}=PATH; or build the WideResNet-50-2 model with "
    f"`python tools/export_wrn50.py --checkpoint {CHECKPOINT_FILE_NAME} --out {{out}}` "
    "(any ONNX model with a 4-D feature-map output works, see the README)."
)


class ModelNotFoundError(FileNotFoundError):
    """No ONNX model could be found or built; the message says how to provide one."""


def downloads_disabled() -> bool:
    """Whether ``ANOMCLUST_OFFLINE`` is set to something other than ``""`` or ``"0"``.

    Examples
    --------
    >>> isinstance(downloads_disabled(), bool)
    True
    """
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def resolve_model(
    model: "Optional[PathLike]" = None,
    *,
    allow_download: bool = True,
    progress: "Optional[Callable[[int, Optional[int]], None]]" = None,
    cache_dir: "Optional[PathLike]" = None,
) -> Path:
    """Return the path of the ONNX model to use (see the module docstring for the order).

    Parameters
    ----------
    model : str or os.PathLike, optional
        Explicit model path; must exist.
    allow_download : bool, default True
        Allow downloading the WideResNet-50-2 checkpoint when nothing else is
        found. ``ANOMCLUST_OFFLINE=1`` disables downloads as well.
    progress : callable, optional
        Passed to the checkpoint download as ``progress(bytes_done, bytes_total)``.
    cache_dir : str or os.PathLike, optional
        User cache folder; default ``anomclust_lite.files.user_cache.user_cache_dir()``.

    Returns
    -------
    pathlib.Path
        An existing ``.onnx`` file.

    Raises
    ------
    ModelNotFoundError
        The explicit or ``ANOMCLUST_MODEL`` path does not exist, or no model
        could be found, built or downloaded.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "m.onnx"
    >>> _ = p.write_bytes(b"")
    >>> resolve_model(p) == p
    True
    """
    if not isinstance(allow_download, bool):
        raise ValueError(f"allow_download must be True or False; got {allow_download!r}")
    if model is not None:
        return _existing_model(Path(model), "model")
    env_value = os.environ.get(MODEL_ENV, "")
    if env_value:
        return _existing_model(Path(env_value), f"${MODEL_ENV}")

    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    return _default_model(cache, allow_download, progress)


def _default_model(
    cache: Path, allow_download: bool, progress: "Optional[Callable[[int, Optional[int]], None]]"
) -> Path:
    """The default backbone (steps 3-5): WideResNet-50-2 layer 2 from, or built into, the user cache."""
    target = cache / MODEL_FILE_NAME
    how_to = _HOW_TO.format(out=display_path(target))
    if target.is_file():
        logger.info("using the cached model %s", display_path(target))
        return target
    checkpoint = cache / CHECKPOINT_FILE_NAME
    if not checkpoint.is_file():
        checkpoint = _download_checkpoint(checkpoint, target, allow_download, progress, how_to)
    logger.info("building %s from %s", display_path(target), display_path(checkpoint))
    try:
        built = Path(wrn50.export_wrn50_onnx(checkpoint, target))
    except Exception as exc:  # missing `onnx`, bad checkpoint, disk errors: one message
        raise ModelNotFoundError(
            f"found the checkpoint {display_path(checkpoint)} but building {display_path(target)} from it "
            f"failed ({type(exc).__name__}: {exc}). {how_to}"
        ) from exc
    if not built.is_file():
        raise ModelNotFoundError(f"building {display_path(built)} reported success but the file is missing. {how_to}")
    return built


def _download_checkpoint(
    checkpoint: Path,
    target: Path,
    allow_download: bool,
    progress: "Optional[Callable[[int, Optional[int]], None]]",
    how_to: str,
) -> Path:
    """Download the WideResNet-50-2 checkpoint, or say why not and how to provide a model."""
    if not allow_download or downloads_disabled():
        why = "downloads are disabled" + (f" (${OFFLINE_ENV} is set)" if downloads_disabled() else "")
        raise ModelNotFoundError(
            f"no ONNX model found: no --model given, ${MODEL_ENV} is not set, {display_path(target)} "
            f"does not exist and {why}. {how_to}"
        )
    logger.info("downloading the WideResNet-50-2 checkpoint to %s", display_path(checkpoint))
    try:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        return Path(wrn50.download_checkpoint(checkpoint, progress=progress))
    except Exception as exc:  # network, disk or verification errors: one message
        raise ModelNotFoundError(
            f"no ONNX model found and downloading the WideResNet-50-2 checkpoint to "
            f"{display_path(checkpoint)} failed ({type(exc).__name__}: {exc}). {how_to}"
        ) from exc


def _existing_model(path: Path, source: str) -> Path:
    if path.is_file():
        return path
    if path.exists():
        raise ModelNotFoundError(f"{source} {display_path(path)} is not a file; pass the path of an .onnx model")
    raise ModelNotFoundError(
        f"{source} {display_path(path)} does not exist; pass the path of an existing .onnx model"
    )

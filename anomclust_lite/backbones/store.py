"""Named backbones: the embedded default and the models built into the user cache, with provenance.

A backbone is an ONNX feature extractor known by name:

- ``resnet50v2`` — the embedded default (:mod:`.embedded`), always ready;
- ``wrn50`` — the paper's WideResNet-50-2 layer 2, built by
  ``anomclust-lite backbones build wrn50`` from torchvision's checkpoint.
  Only a checkpoint whose SHA-256 matches torchvision's may become ``wrn50``;
- any other name — a model built with ``backbones build wrn50 --name NAME``
  (for example from your own, unverified weights).

Built models live in ``<user cache>/backbones/<name>.onnx``, each with a
provenance record ``<name>.json``: the architecture, the source checkpoint
and its SHA-256, whether that checksum was verified, when it was built, by
which version, and the model file's own SHA-256. A cached model whose record
is missing, unreadable or does not match the file is not used (a warning
says why and how to rebuild it).

Examples
--------
>>> import tempfile
>>> cache = tempfile.mkdtemp()
>>> [b.name for b in list_backbones(cache)]
['resnet50v2', 'wrn50']
>>> get_backbone("wrn50", cache)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
anomclust_lite.backbones.store.BackboneNotReadyError: backbone 'wrn50' is not built yet: ...
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..files.atomic import atomic_write_bytes, atomic_write_text
from ..files.hashing import sha256_file
from ..files.user_cache import user_cache_dir
from .embedded import EMBEDDED_NAME, EMBEDDED_SHA256, EMBEDDED_SOURCE, embedded_model_path

__all__ = [
    "DEFAULT_BACKBONE",
    "WRN50_NAME",
    "STORE_FOLDER",
    "Backbone",
    "BackboneNotReadyError",
    "check_backbone_name",
    "store_model",
    "get_backbone",
    "list_backbones",
    "model_backbone",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: The backbone used when none is named.
DEFAULT_BACKBONE = EMBEDDED_NAME
#: The paper's WideResNet-50-2; only a verified torchvision checkpoint may be built under this name.
WRN50_NAME = "wrn50"
#: Folder of built models inside the user cache.
STORE_FOLDER = "backbones"

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_RECORD_VERSION = 1
_BUILD_WRN50 = "anomclust-lite backbones build wrn50"
_LIST = "anomclust-lite backbones"


class BackboneNotReadyError(FileNotFoundError):
    """A named backbone is unknown, not built, or its cached model failed its provenance check."""


@dataclass(frozen=True)
class Backbone:
    """A backbone and its state.

    Attributes
    ----------
    name : str
        ``resnet50v2``, ``wrn50``, a built model's name, or ``"model"`` for an
        explicit ONNX file.
    state : str
        ``"ready"``, ``"not built"`` or ``"not usable: <why>"``.
    description : str
        What the network is.
    origin : str
        Where it came from (embedded, built from which checkpoint, a path).
    path : pathlib.Path or None
        The ONNX file when ready.
    verified : bool or None
        Whether the source checksum was verified (None: not applicable).
    record : dict
        The provenance record (empty for the embedded backbone and explicit files).
    """

    name: str
    state: str
    description: str
    origin: str
    path: Optional[Path] = None
    verified: Optional[bool] = None
    record: Dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (paths as strings)."""
        out = asdict(self)
        out["path"] = None if self.path is None else str(self.path)
        return out


def check_backbone_name(name: object) -> str:
    """Validate a backbone name: 1-64 of ``a-z 0-9 _ . -``, starting with a letter or digit.

    Examples
    --------
    >>> check_backbone_name("mine-v2")
    'mine-v2'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"a backbone name must be 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit; "
            f"got {name!r}"
        )
    return name


def _store(cache_dir: "Optional[PathLike]") -> Path:
    return (Path(os.fspath(cache_dir)) if cache_dir is not None else user_cache_dir()) / STORE_FOLDER


def store_model(
    name: str,
    data: bytes,
    *,
    architecture: str,
    source: str,
    source_sha256: str,
    verified: bool,
    cache_dir: "Optional[PathLike]" = None,
) -> Path:
    """Put a built model in the cache under ``name`` with its provenance record; return its path.

    Raises
    ------
    ValueError
        A bad name, the embedded backbone's name, or ``wrn50`` from an
        unverified source (issue 19: an unverified model never becomes a
        default).
    """
    check_backbone_name(name)
    if name == EMBEDDED_NAME:
        raise ValueError(f"{name!r} is the embedded backbone's name; choose another --name")
    if name == WRN50_NAME and verified is not True:
        raise ValueError(
            f"only torchvision's checksum-verified checkpoint can be built as {WRN50_NAME!r}; "
            "give an unverified model its own name with --name NAME (then use it with --backbone NAME)"
        )
    from .. import __version__

    folder = _store(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.onnx"
    atomic_write_bytes(model, data)
    record = {
        "record_version": _RECORD_VERSION,
        "name": name,
        "architecture": architecture,
        "source": source,
        "source_sha256": source_sha256,
        "verified": bool(verified),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "anomclust_lite_version": __version__,
        "model_file": model.name,
        "model_sha256": sha256_file(model),
    }
    atomic_write_text(folder / f"{name}.json", json.dumps(record, indent=2) + "\n")
    logger.info("stored backbone %r at %s", name, model)
    return model


def _embedded(cache_dir: "Optional[PathLike]", *, write: bool = True) -> Backbone:
    path = embedded_model_path(cache_dir, write=write)
    return Backbone(
        name=EMBEDDED_NAME,
        state="ready",
        description="ResNet-50 v2 layer 2 (stride 8, 512 channels), ImageNet weights",
        origin=f"embedded in the package: {EMBEDDED_SOURCE}; weights sha256 {EMBEDDED_SHA256[:16]}",
        path=path,
        verified=True,
    )


def _record_problem(record: Any, name: str, model: Path) -> Optional[str]:
    """Why a cached model may not be used, or None when it matches its record."""
    if not isinstance(record, dict) or record.get("record_version") != _RECORD_VERSION:
        return "its provenance record is not one this version writes"
    if record.get("name") != name or record.get("model_file") != model.name:
        return "its provenance record names another model"
    if not isinstance(record.get("verified"), bool) or (name == WRN50_NAME and record["verified"] is not True):
        return "its provenance record does not say it was built from torchvision's verified checkpoint"
    if not model.is_file():
        return f"the model file {model.name} is missing"
    if sha256_file(model) != record.get("model_sha256"):
        return "the model file does not match the checksum in its provenance record"
    return None


def _cached(name: str, cache_dir: "Optional[PathLike]") -> Backbone:
    """A built backbone from the cache: ready, not built, or not usable (with the reason)."""
    folder = _store(cache_dir)
    model, record_file = folder / f"{name}.onnx", folder / f"{name}.json"
    description = "WideResNet-50-2 layer 2 (stride 8, 512 channels)"
    if not record_file.exists() and not model.exists():
        return Backbone(name, "not built", description, "torchvision wide_resnet50_2 ImageNet checkpoint")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        record, problem = {}, f"its provenance record {record_file.name} cannot be read ({exc.__class__.__name__})"
    else:
        problem = _record_problem(record, name, model)
    if problem:
        return Backbone(name, f"not usable: {problem}", description, f"cached at {model}", record=dict(record))
    verified = "checksum verified" if record["verified"] else "checksum NOT verified"
    origin = f"built {record.get('created', '?')} from {record.get('source', '?')} (sha256 {str(record.get('source_sha256'))[:16]}, {verified})"
    return Backbone(name, "ready", str(record.get("architecture", description)), origin, model, record["verified"], record)


def _built_names(cache_dir: "Optional[PathLike]") -> List[str]:
    folder = _store(cache_dir)
    if not folder.is_dir():
        return []
    names = {p.stem for p in folder.iterdir() if p.suffix in (".onnx", ".json") and _NAME.match(p.stem)}
    return sorted(names - {EMBEDDED_NAME, WRN50_NAME})


def get_backbone(name: str, cache_dir: "Optional[PathLike]" = None) -> Backbone:
    """The ready backbone called ``name``.

    Raises
    ------
    BackboneNotReadyError
        Unknown name, not built yet, or a cached model that does not match
        its provenance record (also logged as a warning); the message names
        the command that fixes it.
    """
    check_backbone_name(name)
    if name == EMBEDDED_NAME:
        return _embedded(cache_dir)
    backbone = _cached(name, cache_dir)
    if backbone.ready:
        return backbone
    if backbone.state == "not built" and name == WRN50_NAME:
        raise BackboneNotReadyError(
            f"backbone {name!r} is not built yet: run `{_BUILD_WRN50}` (downloads torchvision's 263 MB checkpoint) "
            f"or `{_BUILD_WRN50} --checkpoint PATH`"
        )
    if backbone.state == "not built":
        known = ", ".join([EMBEDDED_NAME, WRN50_NAME] + _built_names(cache_dir))
        raise BackboneNotReadyError(f"no backbone named {name!r} (known: {known}); `{_LIST}` lists them")
    message = f"the cached backbone {name!r} is not used: {backbone.state[len('not usable: '):]}"
    logger.warning("%s", message)
    how = f"`{_BUILD_WRN50}`" if name == WRN50_NAME else f"`{_BUILD_WRN50} --checkpoint PATH --name {name}`"
    raise BackboneNotReadyError(f"{message}; rebuild it with {how}")


def list_backbones(cache_dir: "Optional[PathLike]" = None) -> List[Backbone]:
    """Every backbone: the embedded one, ``wrn50`` (built or not) and each model built under a name."""
    out = [_embedded(cache_dir, write=False), _cached(WRN50_NAME, cache_dir)]
    out += [_cached(name, cache_dir) for name in _built_names(cache_dir)]
    return out


def model_backbone(path: Path, origin: str) -> Backbone:
    """An explicit ONNX file (``--model PATH`` or ``$ANOMCLUST_MODEL``) as a :class:`Backbone`."""
    return Backbone("model", "ready", "ONNX model given by path", origin, path)

"""The cache folder: one :class:`~anomclust_lite.files.array_store.ArrayStore` per kind of array.

Layout (default root ``<user cache>/data``, see
:func:`~anomclust_lite.files.user_cache.user_cache_dir`; every ``--out``
shares it, since entries are keyed by content)::

    <root>/features/     bags of patch embeddings, one per image and extractor settings
    <root>/scores/       patch scores of a set of bags (and normal bags)
    <root>/embeddings/   weighted-average embeddings (scores + weight settings)
    <root>/trust/        image anomaly scores, good-group threshold, novelty parts
    <root>/distances/    Hausdorff-family image distances

:class:`CacheFolder` is also the estimator's cache hook
(:class:`~anomclust_lite.core.memo.ArrayCache`): ``get(kind, key, shape,
dtype)`` and ``put(kind, key, array, dtype)``. Its stores share one
:class:`~anomclust_lite.files.array_store.WriteGuard`, so a full disk gives
one warning and the run goes on without caching.

Size: :meth:`CacheFolder.trim` removes the least-recently-used entries (a
hit refreshes an entry's time) until the folder holds at most the cap;
:meth:`CacheFolder.usage` and :meth:`CacheFolder.clear` serve
``anomclust-lite cache info|clear``. Only files this module's stores write
are counted or removed: ``<kind>/<2 hex>/<64 hex>.npy|.json`` and the
``.<name>.<random>.tmp`` files of interrupted writes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .array_store import ArrayStore, WriteGuard
from .user_cache import user_cache_dir

__all__ = [
    "CACHE_KINDS", "DEFAULT_CACHE_MAX_MB", "CACHE_MAX_MB_ENV", "DATA_FOLDER", "CacheFolder", "KindUsage",
    "default_cache_root", "cache_max_mb",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The kinds of cached arrays, one sub-folder each.
CACHE_KINDS = ("features", "scores", "embeddings", "trust", "distances")
#: Default size cap of the cache folder, in MiB (about 3,000 images of ResNet-50 layer-2 features).
DEFAULT_CACHE_MAX_MB = 5120
#: Environment variable overriding :data:`DEFAULT_CACHE_MAX_MB`.
CACHE_MAX_MB_ENV = "ANOMCLUST_CACHE_MAX_MB"
#: Sub-folder of the user cache that holds the cache folder (beside the built backbones).
DATA_FOLDER = "data"

_LABELS = {"features": "feature cache", "scores": "score cache", "embeddings": "embedding cache",
           "trust": "trust-signal cache", "distances": "distance cache"}
_ENTRY = re.compile(r"[0-9a-f]{64}\.(npy|json)\Z")
_TEMP = re.compile(r"\.[0-9a-f]{64}\.(npy|json)\.[A-Za-z0-9_]+\.tmp\Z")
_SHARD = re.compile(r"[0-9a-f]{2}\Z")


def default_cache_root() -> Path:
    """``<user cache>/data``: the cache folder every run shares unless told otherwise.

    Examples
    --------
    >>> default_cache_root().name
    'data'
    """
    return user_cache_dir() / DATA_FOLDER


def cache_max_mb(value: "Optional[float]" = None) -> float:
    """The size cap in MiB: ``value``, else ``$ANOMCLUST_CACHE_MAX_MB``, else :data:`DEFAULT_CACHE_MAX_MB`.

    Examples
    --------
    >>> cache_max_mb(100), cache_max_mb(None) > 0
    (100.0, True)
    """
    text = os.environ.get(CACHE_MAX_MB_ENV) if value is None else value
    if text is None or text == "":
        return float(DEFAULT_CACHE_MAX_MB)
    try:
        mb = float(text)
    except ValueError:
        raise ValueError(f"{CACHE_MAX_MB_ENV} must be a number of MiB; got {text!r}") from None
    if not np.isfinite(mb) or mb < 0:
        raise ValueError(f"the cache size cap must be a number of MiB >= 0; got {text!r}")
    return mb


@dataclass(frozen=True)
class KindUsage:
    """Entries and bytes of one kind (``temps``: leftover temporary files)."""

    entries: int
    bytes: int
    temps: int = 0


@dataclass(frozen=True)
class _Entry:
    kind: str
    files: Tuple[Path, ...]
    size: int
    used: float


class CacheFolder:
    """The cache folder: a store per kind, the estimator's cache hook, size cap and clean-up.

    Parameters
    ----------
    root : str or os.PathLike, optional
        Default :func:`default_cache_root`. Created when first written.

    Examples
    --------
    >>> import tempfile
    >>> cache = CacheFolder(tempfile.mkdtemp())
    >>> cache.put("scores", "ab" * 32, np.ones((2, 3)), "float32")
    True
    >>> float(cache.get("scores", "ab" * 32, (2, 3), "float32").sum())
    6.0
    >>> cache.usage()["scores"].entries
    1
    """

    def __init__(self, root: "Optional[PathLike]" = None) -> None:
        self.root = Path(os.fspath(root)) if root is not None else default_cache_root()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"cache folder {self.root} exists and is not a folder; pass a folder path")
        self.guard = WriteGuard(self.root)
        self.opened = time.time()
        self._stores: Dict[str, ArrayStore] = {}

    def __repr__(self) -> str:
        return f"CacheFolder({os.fspath(self.root)!r})"

    def store(self, kind: str) -> ArrayStore:
        """The store of one of :data:`CACHE_KINDS` (its folder is created now)."""
        if kind not in CACHE_KINDS:
            raise ValueError(f"kind must be one of {CACHE_KINDS}; got {kind!r}")
        if kind not in self._stores:
            self._stores[kind] = ArrayStore(self.root / kind, guard=self.guard, label=_LABELS[kind], track_use=True)
        return self._stores[kind]

    # ------------------------------------------------------------ the estimator's hook
    def get(self, kind: str, key: str, shape: Tuple[int, ...], dtype: str) -> "Optional[np.ndarray]":
        """The array cached under ``key`` (a hex digest of content and parameters), or None."""
        return self.store(kind).get(key, {"kind": kind}, shape=shape, dtype=dtype)

    def put(self, kind: str, key: str, array: np.ndarray, dtype: str) -> bool:
        """Cache ``array`` under ``key``; False when writing is off (see the module docstring)."""
        return self.store(kind).put(key, array, {"kind": kind}, dtype=dtype)

    # ------------------------------------------------------------ size and clean-up
    def _entries(self) -> Iterator[_Entry]:
        for kind in CACHE_KINDS:
            for shard in _listdir(self.root / kind):
                if not _SHARD.match(shard.name) or not shard.is_dir():
                    continue
                groups: Dict[str, List[Path]] = {}
                for path in _listdir(shard):
                    if _ENTRY.match(path.name) and path.is_file():
                        groups.setdefault(path.name[:64], []).append(path)
                for key, files in groups.items():
                    yield _entry(kind, shard / f"{key}.json", files)

    def _temps(self) -> Iterator[Tuple[str, Path]]:
        for kind in CACHE_KINDS:
            for shard in _listdir(self.root / kind):
                if _SHARD.match(shard.name) and shard.is_dir():
                    yield from ((kind, p) for p in _listdir(shard) if _TEMP.match(p.name) and p.is_file())

    def usage(self) -> Dict[str, KindUsage]:
        """Entries, bytes and leftover temporary files per kind (every kind listed)."""
        counts = {kind: [0, 0, 0] for kind in CACHE_KINDS}
        for entry in self._entries():
            counts[entry.kind][0] += 1
            counts[entry.kind][1] += entry.size
        for kind, path in self._temps():
            counts[kind][2] += 1
            counts[kind][1] += _size(path)
        return {kind: KindUsage(*values) for kind, values in counts.items()}

    def trim(self, max_bytes: int) -> KindUsage:
        """Remove the least-recently-used entries until at most ``max_bytes`` remain; what was removed."""
        entries = sorted(self._entries(), key=lambda e: (e.used, e.files[0]))
        total = sum(e.size for e in entries)
        removed = [0, 0]
        for entry in entries:
            if total <= max_bytes:
                break
            _remove(entry.files)
            total -= entry.size
            removed[0] += 1
            removed[1] += entry.size
        return KindUsage(*removed)

    def clear(self) -> Dict[str, KindUsage]:
        """Remove every entry and leftover temporary file; what was removed, per kind."""
        removed = self.usage()
        for entry in self._entries():
            _remove(entry.files)
        for _, path in self._temps():
            _remove((path,))
        return removed

    def remove_stale_temps(self, before: "Optional[float]" = None) -> int:
        """Remove the temporary files of interrupted writes last changed before ``before`` (default: opening)."""
        limit = self.opened if before is None else before
        stale = [path for _, path in self._temps() if _mtime(path) < limit]
        _remove(stale)
        return len(stale)


def _listdir(folder: Path) -> List[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")


def _entry(kind: str, sidecar: Path, files: List[Path]) -> _Entry:
    """An entry: its files, their size, and its last use (the sidecar's time; an orphan array counts as oldest)."""
    used = _mtime(sidecar) if sidecar in files else 0.0
    # The sidecar goes first, so a reader racing the removal sees a miss, never half an entry.
    ordered = tuple(sorted(files, key=lambda p: p.suffix != ".json"))
    return _Entry(kind, ordered, sum(_size(p) for p in files), used)


def _remove(paths: "Tuple[Path, ...] | List[Path]") -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

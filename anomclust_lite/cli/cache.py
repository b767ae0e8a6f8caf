"""The cache folder from the command line: opened for a run, trimmed after it; ``anomclust-lite cache info|clear``.

Every run shares one content-keyed cache folder
(:class:`~anomclust_lite.files.cache_folder.CacheFolder`: features, patch
scores, embeddings, trust kernels), by default ``<user cache>/data``;
``--cache-dir DIR`` picks another, ``--no-cache`` uses none. At the start of
a run the folder is probed with a real write: one that cannot take files
(full, read-only) is a warning naming the folder and the cause, and the run
goes on without a cache; leftover temporary files of interrupted runs are
removed. At the end, the least recently used entries are removed until the
folder is within ``--cache-max-mb`` (default ``$ANOMCLUST_CACHE_MAX_MB``, else
:data:`~anomclust_lite.files.cache_folder.DEFAULT_CACHE_MAX_MB`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..files.cache_folder import (
    CACHE_MAX_MB_ENV, DEFAULT_CACHE_MAX_MB, CacheFolder, KindUsage, cache_max_mb, default_cache_root,
)
from ..files.safe_text import display_path
from .console import Console, one_line
from .folders import probe_writable
from .outputs import PROG

__all__ = ["add_cache_options", "open_cache", "trim_cache", "build_cache_parser", "cache_command"]

_MIB = 2**20


def _cap(text: str) -> float:
    try:
        return cache_max_mb(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB >= 0, got {text!r}") from None


def add_cache_options(p: argparse.ArgumentParser, group: "Optional[argparse._ArgumentGroup]" = None) -> None:
    """``--cache-dir``, ``--no-cache`` and ``--cache-max-mb``."""
    g = group if group is not None else p
    g.add_argument("--cache-dir", metavar="DIR",
                   help="cache folder for features, scores and embeddings (default: the user cache, "
                        f"{display_path(default_cache_root())}; shared by every run, keyed by content)")
    g.add_argument("--no-cache", action="store_true", help="cache nothing (features, scores, embeddings)")
    g.add_argument("--cache-max-mb", type=_cap, metavar="MIB",
                   help="size cap of the cache folder: the least recently used entries go after each run "
                        f"(default ${CACHE_MAX_MB_ENV} or {DEFAULT_CACHE_MAX_MB})")


def _root(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir).expanduser() if getattr(args, "cache_dir", None) else default_cache_root()


def open_cache(args: argparse.Namespace, console: Console) -> Optional[CacheFolder]:
    """The run's cache folder, probed (None with ``--no-cache``, or with a warning when it cannot take files)."""
    if args.no_cache:
        return None
    root = _root(args)
    try:
        probe_writable(root, "cache folder", "choose another --cache-dir or pass --no-cache")
        cache = CacheFolder(root)
        cache.remove_stale_temps()
    except (ValueError, OSError) as exc:
        console.warn(f"{one_line(exc)}; going on without a cache")
        return None
    return cache


def trim_cache(cache: Optional[CacheFolder], args: argparse.Namespace, console: Console) -> None:
    """Remove the least recently used entries beyond the cap (a failure is a warning: the results are written)."""
    if cache is None:
        return
    cap = cache_max_mb(getattr(args, "cache_max_mb", None))
    try:
        removed = cache.trim(int(cap * _MIB))
    except OSError as exc:
        console.warn(f"could not trim cache folder {display_path(cache.root)} ({one_line(exc)})")
        return
    if removed.entries:
        console.info(f"cache: removed {removed.entries} least recently used entries ({removed.bytes / _MIB:.1f} MiB) "
                     f"to stay within {cap:g} MiB")


def build_cache_parser() -> argparse.ArgumentParser:
    """Parser of ``anomclust-lite cache {info,clear}``."""
    p = argparse.ArgumentParser(
        prog=f"{PROG} cache",
        description="Show or empty the cache folder (features, patch scores, embeddings; keyed by content, "
                    "shared by every run). Built backbones are kept (see 'anomclust-lite backbones').",
    )
    p.add_argument("action", choices=("info", "clear"),
                   help="info: entries and sizes per kind; clear: remove every entry (asks nothing)")
    p.add_argument("--cache-dir", metavar="DIR", help=f"the cache folder (default {display_path(default_cache_root())})")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _table(usage: Dict[str, KindUsage], verb: str) -> List[str]:
    lines = [f"  {kind:<11} {u.entries:>7,} entries  {u.bytes / _MIB:>10.1f} MiB"
             + (f"  ({u.temps} leftover temporary files)" if u.temps else "")
             for kind, u in usage.items()]
    total = sum(u.bytes for u in usage.values())
    lines.append(f"  {'total':<11} {sum(u.entries for u in usage.values()):>7,} entries  {total / _MIB:>10.1f} MiB {verb}")
    return lines


def cache_command(args: argparse.Namespace) -> int:
    """``anomclust-lite cache info|clear``: exit 0, or 1 with one line on stderr."""
    console = Console(args.quiet)
    root = _root(args)
    try:
        cache = CacheFolder(root)
        if args.action == "info":
            cap = cache_max_mb()
            console.result(f"cache folder {display_path(root)} (size cap {cap:g} MiB)")
            for line in _table(cache.usage(), ""):
                console.result(line.rstrip())
        else:
            removed = cache.clear()
            console.result(f"cleared cache folder {display_path(root)}:")
            for line in _table(removed, "removed"):
                console.result(line)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


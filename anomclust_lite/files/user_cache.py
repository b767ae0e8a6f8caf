"""The per-user cache folder of anomclust_lite (downloaded checkpoints, built models)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "user_cache_dir"]

#: Environment variable naming the per-user cache folder.
CACHE_ENV = "ANOMCLUST_CACHE"


def user_cache_dir() -> Path:
    """Per-user cache directory for downloaded checkpoints and exported models.

    ``$ANOMCLUST_CACHE`` if set, else ``$XDG_CACHE_HOME/anomclust_lite`` (when
    ``XDG_CACHE_HOME`` is an absolute path), else ``~/.cache/anomclust_lite``.
    The directory is not created.

    Examples
    --------
    >>> user_cache_dir().name != ""
    True
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "anomclust_lite"
    return Path.home() / ".cache" / "anomclust_lite"

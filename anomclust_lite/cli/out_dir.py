"""Where a run may write, and what it may delete: the one output-folder policy.

Decided before any work (before a feature is extracted):

- The output folder is used only when it is new, empty, or marked as an
  earlier anomclust-lite output (:data:`OUT_MARKER`, a file this module
  writes); a folder holding anything else is refused.
- It may not lie inside an input folder (FOLDER, ``--normal``), nor hold one.
- One run at a time per output folder: a non-blocking ``flock`` on
  :data:`LOCK_NAME` inside it; a second run is refused, not queued.
- Once the lock is held, leftovers of interrupted runs (our ``.*.tmp``
  files) are removed from the folder and from our export folders.
- Exported ``cluster_<k>`` folders carry :data:`EXPORT_MARKER`, which lists
  the names written there. A rerun deletes exactly those names; a
  ``cluster_*`` entry without our marker, or holding anything else, is
  refused before any work and never deleted.

The lock is held until :func:`release_locks` (called by ``main``) or the
end of the process; a second claim of the same folder by the same process
reuses it, so in-process callers (tests, notebooks) can run twice.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..features.images import display_path

__all__ = [
    "OUT_MARKER",
    "LOCK_NAME",
    "EXPORT_MARKER",
    "check_output",
    "claim_output",
    "check_nesting",
    "remove_exports",
    "write_export_marker",
    "lock_output",
    "release_locks",
    "listing",
    "is_regular",
    "is_folder",
]

#: Marker of a folder written by anomclust-lite (so a rerun may replace its files).
OUT_MARKER = ".anomclust-lite-output"
#: Lock file inside the output folder (``flock``; its content is irrelevant).
LOCK_NAME = ".anomclust-lite.lock"
#: Marker of an exported cluster folder: JSON with the names written there.
EXPORT_MARKER = ".anomclust-export"
#: Prefix of exported cluster folders.
EXPORT_PREFIX = "cluster_"

_PROG = "anomclust-lite"
#: Lock file descriptors held by this process: resolved folder -> fd.
_HELD: Dict[str, int] = {}


def check_output(out: Path, inputs: Sequence[Tuple[str, Path]], *, export: bool = False) -> Path:
    """Check, without writing anything, that ``out`` may be used; returns it resolved.

    ``inputs`` are ``(what, folder)`` pairs (e.g. ``("image folder", FOLDER)``)
    that ``out`` may neither lie in nor hold. With ``export``, existing
    ``cluster_*`` entries are checked too (see :func:`_export_folders`).
    Raises ``ValueError`` with a one-line message naming the problem.
    """
    out = Path(out).expanduser().resolve()
    check_nesting(out, inputs)
    _check_claimable(out)
    if export and os.path.isdir(out):
        _export_folders(out)
    return out


def claim_output(out: Path) -> Path:
    """Create, mark and lock the checked output folder ``out``, then remove our leftovers in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_out_marker(out)
        lock_output(out)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot write to output folder {display_path(out)} ({reason}); choose another --out") from None
    _remove_leftovers(out)
    return out


def check_nesting(out: Path, inputs: Sequence[Tuple[str, Path]]) -> None:
    """Refuse ``out`` inside an input folder, or an input folder inside ``out`` (both resolved)."""
    for what, folder in inputs:
        folder = Path(folder).resolve()
        if _is_inside(out, folder):
            raise ValueError(
                f"output folder {display_path(out)} is inside the {what} {display_path(folder)} "
                "(its files would be read as input next time); choose an --out outside it"
            )
        if _is_inside(folder, out):
            raise ValueError(
                f"the {what} {display_path(folder)} is inside the output folder {display_path(out)} "
                "(a rerun could replace or delete it); choose an --out outside it"
            )


def _is_inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_claimable(out: Path) -> None:
    """``out`` is missing, an empty folder, or a folder carrying our marker."""
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValueError(f"cannot write to output folder {display_path(out)} ({exc.strerror}); choose another --out") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"output folder {display_path(out)} exists and is not a folder; choose another --out")
    try:
        entries = sorted(os.listdir(out))
    except OSError as exc:
        raise ValueError(f"cannot list output folder {display_path(out)} ({exc.strerror}); choose another --out") from None
    if entries and not is_regular(out / OUT_MARKER):
        shown = ", ".join(repr(display_path(e)) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise ValueError(
            f"output folder {display_path(out)} is not empty and was not made by {_PROG} "
            f"({len(entries)} entries: {shown}); choose a new or empty --out"
        )


def is_regular(path: Path) -> bool:
    """``path`` is a regular file (links not followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _write_out_marker(out: Path) -> None:
    """Create :data:`OUT_MARKER` once (never replaced, never through a link)."""
    try:
        fd = os.open(out / OUT_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"made by {_PROG}: a rerun may replace the files it wrote here\n")


def lock_output(out: Path, advice: str = "wait for it to finish or choose another --out") -> None:
    """Take the folder's lock, non-blocking; refuse (ending with ``advice``) when another process holds it."""
    key = os.fspath(out)
    path = out / LOCK_NAME
    held = _HELD.get(key)
    if held is not None:
        try:
            if os.path.samestat(os.fstat(held), os.lstat(path)):
                return
        except OSError:
            pass
        os.close(_HELD.pop(key))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ValueError(
                f"another {_PROG} run is writing to {display_path(out)} (it holds {LOCK_NAME}); {advice}"
            ) from None
        raise
    _HELD[key] = fd


def release_locks() -> None:
    """Release every output-folder lock this process holds."""
    while _HELD:
        _, fd = _HELD.popitem()
        try:
            os.close(fd)
        except OSError:
            pass


def _remove_leftovers(out: Path) -> None:
    """Remove our ``.*.tmp`` files (interrupted writes) from ``out`` and our export folders."""
    folders = [out] + [p for p in listing(out) if p.name.startswith(EXPORT_PREFIX) and _marked_export(p)]
    for folder in folders:
        for entry in listing(folder):
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and _is_file_or_link(entry):
                try:
                    entry.unlink()
                except FileNotFoundError:
                    pass


def listing(folder: Path) -> List[Path]:
    """The entries of ``folder``, sorted ([] when it cannot be listed)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def is_folder(path: Path) -> bool:
    """``path`` is a folder (links not followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_file_or_link(path: Path) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _marked_export(folder: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(folder).st_mode) and is_regular(folder / EXPORT_MARKER)
    except OSError:
        return False


def _export_names(folder: Path) -> List[str]:
    """The names our marker says were written into ``folder`` (none for an old or damaged marker)."""
    try:
        data = json.loads((folder / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = data.get("files") if isinstance(data, dict) else None
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")]


def _export_folders(out: Path) -> List[Path]:
    """Our earlier ``cluster_*`` folders; refuses any that is not ours or holds anything else."""
    ours = []
    for entry in listing(out):
        if not entry.name.startswith(EXPORT_PREFIX):
            continue
        if not _marked_export(entry):
            raise ValueError(
                f"{display_path(entry)} exists and was not made by {_PROG} --export; "
                "move it away or choose another --out"
            )
        allowed = set(_export_names(entry)) | {EXPORT_MARKER}
        foreign = sorted(e.name for e in listing(entry) if e.name not in allowed or not _is_file_or_link(e))
        if foreign:
            raise ValueError(
                f"{display_path(entry)} holds files {_PROG} did not export there "
                f"(e.g. {display_path(foreign[0])!r}); move them away or choose another --out"
            )
        ours.append(entry)
    return ours


def remove_exports(out: Path) -> None:
    """Delete our earlier export folders: exactly the names each marker lists, then the folder.

    Checked again first (:func:`_export_folders`), so nothing else is ever deleted.
    """
    for folder in _export_folders(out):
        for name in _export_names(folder):
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass
        (folder / EXPORT_MARKER).unlink()
        folder.rmdir()


def write_export_marker(folder: Path, names: Sequence[str]) -> None:
    """Write ``folder``'s marker listing ``names`` (all of them, before any is written)."""
    from ..files.atomic import atomic_write_text

    text = json.dumps({"made_by": f"{_PROG} --export", "files": list(names)}, indent=1) + "\n"
    atomic_write_text(folder / EXPORT_MARKER, text)

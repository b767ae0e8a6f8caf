"""A run's outputs appear together or not at all: staged, committed by one rename, then installed.

Why a staging folder and a commit rename rather than only a manifest that
readers check: with a manifest alone, a run stopped between two files leaves
the *old* set destroyed (half replaced) and readers can only refuse it; with
staging, the old set stands until the commit, and the commit is one
``rename``. The manifest is kept as well, so any reader can check what it
reads.

The protocol, inside the locked output folder OUT (:mod:`.out_dir`):

1. **Stage**: every output of the run (tables, ``model.npz``, the report,
   ``cluster_<k>`` export folders) is written into a new
   ``OUT/.anomclust-staging-XXXX/`` (its marker :data:`STAGING_MARKER` is
   written first, so only folders the tool made are ever deleted).
2. **Commit**: the manifest (:data:`MANIFEST_NAME`: the command, each file's
   SHA-256 and size, the export folders) is written into the staging folder
   last, then the folder is renamed to ``OUT/.anomclust-pending``: one atomic
   rename, the commit point.
3. **Install**: each staged file replaces its namesake in OUT
   (``os.replace``); the earlier export folders (ours only) are deleted and
   the new ones moved in; files of the earlier set that the new one lacks
   are removed; the manifest moves last; the pending folder is removed.
4. **Recovery** (:func:`recover`), by whoever next holds OUT's lock (a run,
   ``name``, ``assign`` reading a model there): an interrupted install is
   finished (the commit happened: roll forward), and staging folders are
   deleted (no commit: the earlier set stands).

Readers of a run's files (``assign`` reading ``model.npz``, ``name``) call
:func:`open_run_folder`, which recovers and then checks each file they read
against the manifest (:func:`check_member`). A reader that is not the tool
sees a mix only if it looks during the install itself (a few renames) or
after the process was killed inside it, until the tool next touches the
folder; the manifest, written last, says which files belong together.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from ..features.images import display_path
from ..files.atomic import atomic_write_text, refuse_non_regular
from ..files.hashing import sha256_file
from ..files.safe_open import UnsafeFileError, open_regular, read_capped
from . import out_dir

__all__ = [
    "MANIFEST_NAME",
    "PENDING_NAME",
    "STAGING_PREFIX",
    "STAGING_MARKER",
    "OUTPUT_FILES",
    "check_kind",
    "staged_outputs",
    "recover",
    "read_manifest",
    "check_member",
    "claim_run_folder",
    "open_run_folder",
]

#: The manifest of the installed set (JSON): command, files with SHA-256 and size, export folders.
MANIFEST_NAME = ".anomclust-lite-manifest.json"
#: The committed set, while it is being installed.
PENDING_NAME = ".anomclust-pending"
#: Prefix of staging folders (uncommitted sets).
STAGING_PREFIX = ".anomclust-staging-"
#: Marker written first into a staging folder: the tool made it, so the tool may delete it.
STAGING_MARKER = ".anomclust-staging"
#: The files each command writes into its output folder; a folder holds the outputs of one command.
OUTPUT_FILES = {
    "cluster": ("clusters.csv", "summary.json", "model.npz", "report.html"),
    "assign": ("assignments.csv", "report.html"),
}
_FORMAT = "anomclust-lite outputs"
_MAX_MANIFEST_BYTES = 1 << 20


@contextlib.contextmanager
def staged_outputs(out: Path, command: str, *, keep: bool = False) -> Iterator[Path]:
    """Yield a staging folder inside ``out`` (locked, recovered); install its files together on success.

    Write every output into the yielded folder (same names as in ``out``;
    export folders ``cluster_<k>`` too). On leaving the block normally the
    set is committed and installed; on any exception (including Ctrl-C) the
    staging folder is deleted and ``out`` keeps its earlier set.

    ``keep``: files of the earlier set that are not staged are kept (an
    update of some files, as ``name`` does); else they are removed.
    """
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        _write_marker(stage)
        yield stage
    except BaseException as exc:
        _remove_staging(stage)
        if isinstance(exc, OSError) and isinstance(exc.filename, str) and exc.filename.startswith(f"{stage}{os.sep}"):
            raise _named_in(exc, out / os.path.relpath(exc.filename, stage)) from exc
        raise
    with _ctrl_c_deferred():  # commit and install are not cut short by Ctrl-C (it is raised once they are done)
        try:
            _commit(out, stage, command, keep=keep)
        except BaseException:
            _remove_staging(stage)
            raise
        install_pending(out)


def _named_in(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (the output it was for) instead of its staging copy."""
    try:
        return type(exc)(exc.errno, exc.strerror, os.fspath(path))
    except TypeError:  # an OSError subclass with another constructor
        return OSError(exc.errno, exc.strerror, os.fspath(path))


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold back SIGINT inside the block; a Ctrl-C that came meanwhile is raised after it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here


def _write_marker(stage: Path) -> None:
    fd = os.open(stage / STAGING_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("staging folder of an anomclust-lite run; deleted when the run ends or by the next run\n")


def _commit(out: Path, stage: Path, command: str, *, keep: bool) -> None:
    """Write the manifest into ``stage``, then rename it to OUT/PENDING_NAME (the commit point)."""
    files: Dict[str, Dict[str, object]] = {}
    exports: List[str] = []
    for entry in sorted(stage.iterdir()):
        if entry.name == STAGING_MARKER:
            continue
        mode = os.lstat(entry).st_mode
        if stat.S_ISDIR(mode) and entry.name.startswith(out_dir.EXPORT_PREFIX):
            exports.append(entry.name)
        elif stat.S_ISREG(mode):
            files[entry.name] = {"sha256": sha256_file(entry), "bytes": entry.stat().st_size}
    for name in files:  # a link, device, FIFO or folder in the way is refused and left as it is
        refuse_non_regular(out / name)
    if keep:  # an update: the earlier set's other files and its export folders stay
        earlier = read_manifest(out) or {}
        kept = {n: v for n, v in earlier.get("files", {}).items() if n not in files and out_dir.is_regular(out / n)}
        files = dict(sorted({**kept, **files}.items()))
        exports = [e for e in earlier.get("exports", []) if out_dir.is_folder(out / e)]
    manifest = {"format": _FORMAT, "version": 1, "command": command, "files": files, "exports": exports,
                "replace_exports": not keep}
    atomic_write_text(stage / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    _fsync_folder(stage)
    os.rename(stage, out / PENDING_NAME)
    _fsync_folder(out)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def install_pending(out: Path) -> None:
    """Finish installing a committed set (idempotent: safe to repeat after an interruption)."""
    pending = out / PENDING_NAME
    if not out_dir.is_folder(pending):
        return
    manifest = _load_manifest(pending / MANIFEST_NAME)
    if manifest is None:  # cannot happen after a commit (the manifest is written before the rename)
        _remove_staging(pending)
        return
    staged_exports = [e for e in manifest["exports"] if out_dir.is_folder(pending / e)]
    if manifest.get("replace_exports", True) and len(staged_exports) == len(manifest["exports"]):
        out_dir.remove_exports(out)  # none of the new ones moved yet: the earlier ones (ours) go first
    for name in staged_exports:
        os.rename(pending / name, out / name)
    for name in manifest["files"]:
        if out_dir.is_regular(pending / name):
            os.replace(pending / name, out / name)
    earlier = read_manifest(out)
    for name in (earlier or {}).get("files", {}):
        if name not in manifest["files"] and name != MANIFEST_NAME:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    os.replace(pending / MANIFEST_NAME, out / MANIFEST_NAME)
    _fsync_folder(out)
    _remove_staging(pending)


def recover(out: Path) -> None:
    """Roll an interrupted install forward and delete uncommitted staging folders (hold OUT's lock)."""
    install_pending(out)
    for entry in out_dir.listing(out):
        if entry.name.startswith(STAGING_PREFIX):
            _remove_staging(entry)


def _remove_staging(folder: Path) -> None:
    """Delete a staging or pending folder, only if it is a real folder carrying our staging marker."""
    if out_dir.is_folder(folder) and out_dir.is_regular(folder / STAGING_MARKER):
        shutil.rmtree(folder, ignore_errors=True)


def _load_manifest(path: Path) -> Optional[Dict[str, object]]:
    """The manifest at ``path``, or None when missing or not one of ours."""
    try:
        with open_regular(path, _MAX_MANIFEST_BYTES) as fh:
            data = json.loads(read_capped(fh, path, _MAX_MANIFEST_BYTES).decode("utf-8"))
    except (OSError, UnsafeFileError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    files, exports = data.get("files"), data.get("exports")
    if not isinstance(files, dict) or not isinstance(exports, list):
        return None
    safe = lambda n: isinstance(n, str) and n and "/" not in n and n not in (".", "..")  # noqa: E731
    if not all(safe(n) and isinstance(v, dict) for n, v in files.items()) or not all(safe(e) for e in exports):
        return None
    return data


def read_manifest(out: Path) -> Optional[Dict[str, object]]:
    """The manifest of the set installed in ``out`` (None: none, e.g. written by an older version)."""
    return _load_manifest(out / MANIFEST_NAME)


def check_member(path: Path) -> None:
    """Refuse ``path`` when the manifest beside it lists it with other content (a mixed or edited set)."""
    manifest = read_manifest(path.parent)
    entry = (manifest or {}).get("files", {}).get(path.name)  # type: ignore[union-attr]
    if entry is None:
        return
    if sha256_file(path) != entry.get("sha256"):
        raise ValueError(
            f"{display_path(path)} is not the file its run wrote (its SHA-256 differs from "
            f"{display_path(path.parent / MANIFEST_NAME)}); rerun the command that made it"
        )


def check_kind(out: Path, command: str) -> None:
    """Refuse an output folder holding another command's outputs (``assign --out`` on a fit's folder, ...).

    Judged by the manifest's command, and by the files themselves for folders
    written before manifests existed.
    """
    manifest = read_manifest(out)
    made_by = manifest.get("command") if manifest else None
    others = {name for kind, names in OUTPUT_FILES.items() if kind != command for name in names}
    foreign = sorted(n for n in others - set(OUTPUT_FILES.get(command, ())) if out_dir.is_regular(out / n))
    if made_by not in (None, command) or foreign:
        what = f"the outputs of the {made_by} command" if made_by not in (None, command) else ", ".join(foreign)
        raise ValueError(
            f"output folder {display_path(out)} holds {what}, which the {command} command would replace or mix "
            "with its own; choose another --out"
        )


def claim_run_folder(out: Path, command: str) -> Path:
    """:func:`check_kind`, :func:`.out_dir.claim_output` (create, mark, lock, remove temporary files), :func:`recover`."""
    if out_dir.is_folder(out):
        check_kind(out, command)
    out = out_dir.claim_output(out)
    recover(out)
    return out


def open_run_folder(folder: Path) -> bool:
    """Before reading a run's files in ``folder``: lock it, finish or undo an interrupted write.

    Returns False (and does nothing) for a folder the tool did not mark.
    Raises ``ValueError`` when another run holds the folder's lock.
    """
    if not out_dir.is_regular(folder / out_dir.OUT_MARKER):
        return False
    try:
        out_dir.lock_output(folder, "wait for it to finish, then try again")
    except OSError:  # a read-only folder: nothing to finish there; check_member still checks what is read
        return True
    recover(folder)
    return True

"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

An interrupted run therefore never leaves a half-written output behind: the
target either keeps its old content or gets the complete new one. Only
regular files are written: an existing target that is anything else (a
device such as ``/dev/full``, a folder, a FIFO, a symbolic link) is refused
with :class:`NotRegularFileError` and left as it is, never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

import numpy as np

__all__ = [
    "NotRegularFileError", "refuse_non_regular", "atomic_open", "atomic_write_bytes", "atomic_write_text",
    "atomic_save_npy", "atomic_save_npz",
]

PathLike = Union[str, "os.PathLike[str]"]


class NotRegularFileError(FileExistsError):
    """The target exists and is not a regular file (device, folder, FIFO, link): it is not replaced."""


def refuse_non_regular(target: Path) -> None:
    """Raise :class:`NotRegularFileError` if ``target`` exists and is not a regular file (links not followed)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(
            errno.EEXIST, "exists and is not a regular file (a device, folder, pipe or link); not replaced",
            os.fspath(target))


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, encoding: "str | None" = None) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``.

    An existing ``path`` that is not a regular file raises
    :class:`NotRegularFileError` before anything is written (checked again
    just before the rename). On any exception the temporary file is removed
    and ``path`` is untouched.
    A file that ends up shorter than what was written (a short write that
    the writer did not report) raises ``OSError`` too. An ``OSError``
    without a file name (e.g. ``ENOSPC`` from a write or ``fsync``) is re-raised with ``path`` as its file name, so the message
    says which output could not be written.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w'; got {mode!r}")
    target = Path(path)
    refuse_non_regular(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if _lacks_filename(exc):
            raise _with_filename(exc, target) from exc
        raise
    try:
        # mkstemp creates 0600 files; give the result the usual umask-derived mode.
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            _check_complete(fh)
        refuse_non_regular(target)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _lacks_filename(exc):
            raise _with_filename(exc, target) from exc
        raise


def _check_complete(fh: IO) -> None:
    """Raise ``OSError`` if the file on disk is shorter than what was written to it.

    Some writers (NumPy's ``tofile``, behind ``np.save``) do not report a
    short write, e.g. when a file size limit (``RLIMIT_FSIZE``) cuts the
    file; the file's size is the proof.
    """
    raw = getattr(fh, "buffer", fh)
    expected = raw.tell()
    written = os.fstat(fh.fileno()).st_size
    if written < expected:
        raise OSError(errno.EIO, f"only {written} of {expected} bytes were written (disk full or a file size limit)")


def _lacks_filename(exc: OSError) -> bool:
    return exc.filename is None and exc.errno is not None


def _with_filename(exc: OSError, target: Path) -> OSError:
    """A copy of ``exc`` (same type, errno and message) naming ``target``."""
    try:
        return type(exc)(exc.errno, exc.strerror, os.fspath(target))
    except TypeError:  # an OSError subclass with another constructor
        return OSError(exc.errno, exc.strerror, os.fspath(target))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)


def atomic_save_npy(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (no pickle: object arrays are refused)."""
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def atomic_save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (no pickle).

    The members are stored, not deflated: the large members of a model
    (float16 feature bags) shrink by only a quarter when deflated, which
    took 100 times longer than writing them (39 s against 0.4 s for a
    102 MB model on a loaded 2-core machine; BENCHMARKS.md, issue 18).
    """
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"array {key!r} has dtype object, which would need pickle; convert it first")
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)

"""Opening input files safely: regular files only, never blocking, with a size cap.

Every file the library *reads* as input (images, feature-cache entries,
ONNX models, saved ``model.npz`` files) is opened here:

- the file is opened with ``O_NONBLOCK`` (and ``O_NOCTTY``), so opening a FIFO
  or a device never waits for a writer;
- the *opened* descriptor is checked with ``fstat``: anything but a regular
  file (FIFO, character or block device such as ``/dev/zero``, socket, folder)
  is refused, whatever the name said when the folder was scanned -- a file
  swapped after the scan is judged by what is actually opened;
- a file larger than the caller's ``max_bytes`` is refused from its size
  alone, before a byte is read (a sparse 6 GiB ``x.png`` costs nothing), and
  reading stops at ``max_bytes`` should the file grow while it is read.

Refusals raise :class:`UnsafeFileError` (a ``ValueError``) with a one-line
``reason``; other ``OSError`` s (missing file, permission denied) propagate.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Callable, Optional, Union

__all__ = ["UnsafeFileError", "open_regular", "read_regular", "read_capped", "file_kind"]

PathLike = Union[str, "os.PathLike[str]"]

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


class UnsafeFileError(ValueError):
    """A file was refused before it was read; ``reason`` says why in one line.

    ``too_large`` is True when the size was the reason (False: not a regular file).
    """

    def __init__(self, path: PathLike, reason: str, *, too_large: bool = False) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.too_large = too_large
        super().__init__(reason)


def file_kind(mode: int) -> str:
    """A short name for the kind of file ``mode`` (from ``stat``) describes.

    Examples
    --------
    >>> import stat
    >>> file_kind(stat.S_IFIFO)
    'a FIFO (named pipe)'
    """
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _size_reason(size: int, max_bytes: int) -> str:
    return f"file is {size} bytes, more than the limit of {max_bytes} bytes; refused without reading it"


def open_regular(path: PathLike, max_bytes: int) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file of at most ``max_bytes``.

    The check is made on the opened descriptor (``fstat``), so it holds for the
    file that is read. The caller should still stop reading at ``max_bytes``
    (:func:`read_regular` does).

    Raises
    ------
    UnsafeFileError
        Not a regular file, or larger than ``max_bytes``.
    OSError
        The file cannot be opened (missing, permission denied, ...).
    """
    try:
        fd = os.open(path, _FLAGS)
    except IsADirectoryError:
        raise UnsafeFileError(path, "is a folder, not a file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(path, f"is {file_kind(st.st_mode)}, not a regular file; refused")
        if st.st_size > max_bytes:
            raise UnsafeFileError(path, _size_reason(st.st_size, max_bytes), too_large=True)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(
    path: PathLike, max_bytes: int, *, cap_for_head: "Optional[Callable[[bytes], int]]" = None, head_size: int = 16
) -> bytes:
    """The bytes of the regular file ``path``, refused if it is (or grows) beyond ``max_bytes``.

    ``cap_for_head``, when given, is called with the file's first
    ``head_size`` bytes and returns a tighter limit for this file (e.g. by
    format); the file's size is checked against it before the rest is read.
    It may raise to refuse the file from its head alone.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "f")
    >>> with open(p, "wb") as fh:
    ...     _ = fh.write(b"12345")
    >>> read_regular(p, 10)
    b'12345'
    >>> read_regular(p, 4)
    Traceback (most recent call last):
    ...
    anomclust_lite.files.safe_open.UnsafeFileError: file is 5 bytes, more than the limit of 4 bytes; refused without reading it
    >>> read_regular(p, 10, cap_for_head=lambda head: 3, head_size=2)
    Traceback (most recent call last):
    ...
    anomclust_lite.files.safe_open.UnsafeFileError: file is 5 bytes, more than the limit of 3 bytes; refused without reading it
    """
    with open_regular(path, max_bytes) as fh:
        if cap_for_head is None:
            return read_capped(fh, path, max_bytes)
        head = fh.read(head_size)
        max_bytes = min(max_bytes, int(cap_for_head(head)))
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise UnsafeFileError(path, _size_reason(size, max_bytes), too_large=True)
        return read_capped(fh, path, max_bytes, head=head)


def read_capped(fh: BinaryIO, path: PathLike, max_bytes: int, *, head: bytes = b"") -> bytes:
    """``head`` + the rest of the open file ``fh``, refused once the total passes ``max_bytes``.

    ``path`` names the file in the refusal.
    """
    parts = [head]
    total = len(head)
    while total <= max_bytes:
        chunk = fh.read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise UnsafeFileError(
            path, f"file grew beyond the limit of {max_bytes} bytes while it was read; refused", too_large=True
        )
    return b"".join(parts)

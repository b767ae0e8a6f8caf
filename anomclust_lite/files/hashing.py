"""SHA-256 of data that arrives in chunks: a file on disk or a download in flight."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Iterable, Iterator, Union

from .safe_open import open_regular

__all__ = ["CHUNK_BYTES", "read_chunks", "sha256_chunks", "sha256_file"]

PathLike = Union[str, "os.PathLike[str]"]

#: Bytes read at a time (1 MiB): large files are never held in memory whole.
CHUNK_BYTES = 1 << 20
_ANY_SIZE = 1 << 62  # hashing streams: any size, but only a regular file


def read_chunks(stream: BinaryIO, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield the rest of a binary ``stream`` in chunks of at most ``size`` bytes.

    Examples
    --------
    >>> import io
    >>> [len(c) for c in read_chunks(io.BytesIO(b"abcde"), size=2)]
    [2, 2, 1]
    """
    return iter(lambda: stream.read(size), b"")


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenated ``chunks``, consumed one at a time.

    Examples
    --------
    >>> sha256_chunks([b"ab", b"c"]) == hashlib.sha256(b"abc").hexdigest()
    True
    """
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in :data:`CHUNK_BYTES` chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:12]
    'ba7816bf8f01'
    """
    with open_regular(path, _ANY_SIZE) as fh:  # a FIFO or device swapped in is refused, not read forever
        return sha256_chunks(read_chunks(fh))

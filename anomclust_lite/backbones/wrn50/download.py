"""torchvision's WideResNet-50-2 checkpoint: where it is published, downloading it, verifying it.

:func:`download_checkpoint` streams the file into a temporary file beside the
destination while hashing it, and moves it into place only after the whole
file has arrived with the published SHA-256 prefix.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

from ...core.validation import check_positive_float
from ...files.atomic import atomic_open
from ...files.hashing import CHUNK_BYTES, read_chunks, sha256_chunks, sha256_file

__all__ = [
    "WRN50_URL",
    "WRN50_SHA256_PREFIX",
    "WRN50_CHECKPOINT_FILENAME",
    "ChecksumError",
    "DownloadError",
    "verify_checkpoint",
    "download_checkpoint",
]

logger = logging.getLogger(__name__)

#: torchvision's ImageNet weights for ``wide_resnet50_2`` (IMAGENET1K_V1).
WRN50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
#: Leading hex digits of the checkpoint's SHA-256 (torchvision's convention).
WRN50_SHA256_PREFIX = "95faca4d"
#: File name of the checkpoint in the cache directory.
WRN50_CHECKPOINT_FILENAME = "wide_resnet50_2-95faca4d.pth"

_ALLOWED_URL_SCHEMES = ("https", "http", "file")

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, Optional[int]], None]


class ChecksumError(ValueError):
    """A file's SHA-256 does not match the published checkpoint."""


class DownloadError(OSError):
    """The checkpoint could not be downloaded (network or server error)."""


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix or any(c not in "0123456789abcdef" for c in prefix.lower()):
        raise ValueError(f"sha256_prefix must be a non-empty hex string; got {prefix!r}")
    return prefix.lower()


def verify_checkpoint(
    path: PathLike, *, allow_unverified: bool = False, sha256_prefix: str = WRN50_SHA256_PREFIX
) -> str:
    """Check that ``path`` is the published checkpoint by its SHA-256.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (read in 1 MiB chunks).
    allow_unverified : bool
        If true, a mismatch only logs a warning (use for your own or
        fine-tuned weights).
    sha256_prefix : str
        Expected leading hex digits of the digest (default: torchvision's
        ``95faca4d``).

    Returns
    -------
    str
        The file's full SHA-256 hex digest.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ChecksumError
        The digest does not start with ``sha256_prefix`` and
        ``allow_unverified`` is false.

    Examples
    --------
    >>> import tempfile, pathlib, hashlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pth"
    >>> _ = p.write_bytes(b"weights")
    >>> verify_checkpoint(p, sha256_prefix=hashlib.sha256(b"weights").hexdigest()[:8])[:8]
    '9a129038'
    """
    prefix = _check_prefix(sha256_prefix)
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist or is not a file")
    digest = sha256_file(p)
    if digest.startswith(prefix):
        return digest
    msg = (
        f"checkpoint {str(p)!r} has SHA-256 {digest[:16]}..., expected a digest starting with {prefix!r} "
        f"(torchvision's wide_resnet50_2 weights); the file is corrupt or different"
    )
    if not allow_unverified:
        raise ChecksumError(msg + "; pass allow_unverified=True (--allow-unverified) to use it anyway")
    logger.warning("%s; using it anyway because allow_unverified=True", msg)
    return digest


def download_checkpoint(
    dest: PathLike,
    *,
    url: str = WRN50_URL,
    sha256_prefix: str = WRN50_SHA256_PREFIX,
    progress: Optional[ProgressCallback] = None,
    timeout: float = 60.0,
) -> Path:
    """Download the checkpoint to ``dest``, verify it, and move it into place.

    The data go to a temporary file beside ``dest`` and replace ``dest``
    only after the whole file has arrived and its SHA-256 matched, so an
    interrupted download never leaves a partial ``dest``. Parent
    directories are created.

    Parameters
    ----------
    dest : str or os.PathLike
        Where to write the checkpoint file.
    url : str
        ``https://``, ``http://`` or ``file://`` URL (default: torchvision's).
    sha256_prefix : str
        Expected leading hex digits of the SHA-256.
    progress : callable, optional
        Called as ``progress(bytes_done, total_bytes_or_None)`` after each chunk.
    timeout : float
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DownloadError
        Network or server failure (an ``OSError``); the message names the URL.
    ChecksumError
        The downloaded data have the wrong SHA-256 (nothing is written).
    ValueError
        ``url`` has an unsupported scheme.

    Examples
    --------
    >>> import tempfile, pathlib, hashlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "src.pth").write_bytes(b"weights")
    >>> out = download_checkpoint(d / "copy.pth", url=(d / "src.pth").as_uri(),
    ...                           sha256_prefix=hashlib.sha256(b"weights").hexdigest()[:8])
    >>> out.read_bytes()
    b'weights'
    """
    prefix = _check_prefix(sha256_prefix)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in _ALLOWED_URL_SCHEMES:
        raise ValueError(f"url must be an https://, http:// or file:// URL; got {url!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable (bytes_done, total) or None; got {progress!r}")
    timeout = check_positive_float(timeout, "timeout")
    dest_p = Path(os.fspath(dest))
    dest_p.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dest_p)
    with atomic_open(dest_p, "wb") as fh:
        digest = _fetch(url, fh, timeout, progress)
        if not digest.startswith(prefix):
            raise ChecksumError(
                f"downloaded {url} has SHA-256 {digest[:16]}..., expected a digest starting with {prefix!r}; "
                "the download is corrupt or the file changed"
            )
    return dest_p


def _fetch(url: str, out: BinaryIO, timeout: float, progress: Optional[ProgressCallback]) -> str:
    """Copy ``url`` into ``out``; return the SHA-256 of what arrived (DownloadError on failure)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked by the caller
            length = resp.headers.get("Content-Length")
            sink = _Sink(out, int(length) if length and length.isdigit() else None, progress)
            digest = sha256_chunks(sink.through(read_chunks(resp, CHUNK_BYTES)))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        if isinstance(exc, DownloadError):
            raise
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"could not download {url}: {reason}. Download the file by hand and pass its path "
            "(anomclust-lite backbones build wrn50 --checkpoint PATH)"
        ) from exc
    if sink.total is not None and sink.done != sink.total:
        raise DownloadError(f"download of {url} stopped after {sink.done} of {sink.total} bytes; try again")
    return digest


class _Sink:
    """Writes the received chunks to the temporary file, counts them and reports progress."""

    def __init__(self, out: BinaryIO, total: Optional[int], progress: Optional[ProgressCallback]) -> None:
        self.out = out
        self.total = total
        self.progress = progress
        self.done = 0

    def through(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Write each chunk, then pass it on (to the hash)."""
        for chunk in chunks:
            self.out.write(chunk)
            self.done += len(chunk)
            if self.progress is not None:
                self.progress(self.done, self.total)
            yield chunk

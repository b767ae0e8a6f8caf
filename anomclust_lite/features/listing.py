"""Listing the image files of a folder (:func:`find_images`).

Files whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive) are
listed; hidden files and folders (names starting with ``.``) are skipped.
Symbolic links are followed, every real folder is scanned once, and broken
links, link loops and unreadable folders are reported, never raised.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Set, Tuple, Union

from .images import ImageProblem, display_path, os_error_reason

__all__ = ["IMAGE_EXTENSIONS", "ImageListing", "is_image_file_name", "find_images"]

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions (lower case) that :func:`find_images` lists as images.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass
class ImageListing:
    """Result of :func:`find_images`.

    Attributes
    ----------
    paths : list of pathlib.Path
        Image files, in a deterministic order (sorted by path components).
    skipped_files : int
        Regular files that were not listed because their extension is not an
        image extension or their name is hidden.
    problems : list of ImageProblem
        Broken symbolic links, symbolic-link loops, folders reached twice and
        unreadable folders, in the order met.
    """

    paths: List[Path] = field(default_factory=list)
    skipped_files: int = 0
    problems: List[ImageProblem] = field(default_factory=list)


def is_image_file_name(name: PathLike) -> bool:
    """Whether ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive).

    Examples
    --------
    >>> is_image_file_name("a/B.PNG"), is_image_file_name("notes.txt")
    (True, False)
    """
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: PathLike, *, recursive: bool = True) -> ImageListing:
    """List the image files in ``folder``.

    Symbolic links are followed; every real folder is scanned once, so a link
    loop or a second link to the same folder is reported in
    ``problems`` instead of looping. Broken links and unreadable folders are
    reported too; none of them raise.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder to scan.
    recursive : bool, default True
        Also scan sub-folders.

    Returns
    -------
    ImageListing
        ``paths`` (sorted by path components), ``skipped_files`` and
        ``problems``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        ``folder`` is not a folder.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(d / "a.png")
    >>> _ = (d / "notes.txt").write_text("x")
    >>> listing = find_images(d)
    >>> [p.name for p in listing.paths], listing.skipped_files
    (['a.png'], 1)
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"folder {display_path(root)} does not exist; pass an existing image folder")
    if not root.is_dir():
        raise ValueError(f"folder {display_path(root)} is not a folder; pass the folder that holds the images")
    listing = ImageListing()
    found: List[Path] = []
    visited: Set[Tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        entries = _folder_entries(directory, visited, listing.problems)
        if entries is None:
            continue
        subdirs = _sort_entries(directory, entries, recursive, listing, found)
        stack.extend(reversed(subdirs))  # depth-first, in name order
    listing.paths = sorted(found, key=lambda p: p.parts)
    return listing


def _folder_entries(
    directory: Path, visited: Set[Tuple[int, int]], problems: List[ImageProblem]
) -> "List[os.DirEntry[str]] | None":
    """The entries of ``directory`` in name order; None (with a problem noted) if unreadable or seen before."""
    try:
        st = directory.stat()
    except OSError as exc:
        problems.append(ImageProblem(directory, f"cannot open folder ({os_error_reason(exc)})"))
        return None
    key = (st.st_dev, st.st_ino)
    if key in visited:
        problems.append(
            ImageProblem(
                directory,
                "folder already scanned through another path (symbolic link loop or duplicate link); skipped",
            )
        )
        return None
    visited.add(key)
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append(ImageProblem(directory, f"cannot list folder ({os_error_reason(exc)})"))
        return None


def _sort_entries(
    directory: Path,
    entries: "List[os.DirEntry[str]]",
    recursive: bool,
    listing: ImageListing,
    found: List[Path],
) -> List[Path]:
    """Add the images among ``entries`` to ``found``, count or report the rest; return the sub-folders to scan."""
    subdirs = []
    for entry in entries:
        path = directory / entry.name
        try:
            st_entry = os.stat(entry.path)  # follows links
        except OSError as exc:
            if entry.is_symlink():
                reason = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
                listing.problems.append(ImageProblem(path, f"{reason}; skipped"))
            else:
                listing.problems.append(ImageProblem(path, f"cannot stat ({os_error_reason(exc)}); skipped"))
            continue
        hidden = entry.name.startswith(".")
        if stat.S_ISDIR(st_entry.st_mode):
            if recursive and not hidden:
                subdirs.append(path)
        elif stat.S_ISREG(st_entry.st_mode) and not hidden and is_image_file_name(entry.name):
            found.append(path)
        else:
            listing.skipped_files += 1
    return subdirs

"""Images of a folder: exclusion rules, and ground-truth labels from class sub-folders."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from .images import ImageProblem, display_path
from .listing import find_images

__all__ = ["ImageSet", "relative_name", "collect_images", "folder_labels"]


@dataclass
class ImageSet:
    """Images of a folder after exclusions (see :func:`collect_images`).

    Attributes
    ----------
    folder : pathlib.Path
        The folder that was scanned.
    paths : list of pathlib.Path
        Images kept, sorted.
    excluded : list of pathlib.Path
        Images skipped by the exclusion rules.
    skipped_files : int
        Files that are not images (by extension) or hidden.
    problems : list of ImageProblem
        Broken links, unreadable folders, ...
    """

    folder: Path
    paths: List[Path]
    excluded: List[Path] = field(default_factory=list)
    skipped_files: int = 0
    problems: List[ImageProblem] = field(default_factory=list)


def relative_name(path: Path, folder: Path) -> str:
    """Printable path of ``path`` relative to ``folder``, with '/' separators."""
    try:
        rel = path.relative_to(folder)
    except ValueError:
        rel = path
    return display_path(rel.as_posix())


def collect_images(folder: Path, *, excludes: Sequence[str] = (), default_excludes: bool = True) -> ImageSet:
    """List the images of ``folder`` (recursively) and apply the exclusion rules.

    Default rules (``default_excludes``): skip files whose stem ends with
    ``_mask`` and anything inside a folder named ``ground_truth``. Each glob
    of ``excludes`` is matched (case-sensitively, ``*`` also crossing ``/``)
    against the path relative to ``folder`` and against the file name.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "a_mask.png", "b.jpg"):
    ...     Image.new("RGB", (8, 8)).save(d / name)
    >>> s = collect_images(d, excludes=["*.jpg"])
    >>> [p.name for p in s.paths], [p.name for p in s.excluded]
    (['a.png'], ['a_mask.png', 'b.jpg'])
    """
    root = Path(folder)
    listing = find_images(root)
    kept: List[Path] = []
    excluded: List[Path] = []
    for path in listing.paths:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        rel_text = rel.as_posix()
        skip = False
        if default_excludes and (path.stem.endswith("_mask") or "ground_truth" in rel.parts[:-1]):
            skip = True
        if any(fnmatch.fnmatchcase(rel_text, g) or fnmatch.fnmatchcase(path.name, g) for g in excludes):
            skip = True
        (excluded if skip else kept).append(path)
    return ImageSet(root, kept, excluded, listing.skipped_files, list(listing.problems))


def folder_labels(paths: Sequence[Path], folder: Path) -> Optional[List[str]]:
    """First-level sub-folder name of every image, or None.

    None unless every image lies inside a first-level sub-folder of
    ``folder`` and there are at least two such sub-folders.

    Examples
    --------
    >>> folder_labels([Path("/d/good/1.png"), Path("/d/crack/2.png")], Path("/d"))
    ['good', 'crack']
    >>> folder_labels([Path("/d/good/1.png"), Path("/d/2.png")], Path("/d")) is None
    True
    """
    labels: List[str] = []
    for path in paths:
        try:
            parts = path.relative_to(folder).parts
        except ValueError:
            return None
        if len(parts) < 2:
            return None
        labels.append(display_path(parts[0]))
    return labels if len(set(labels)) >= 2 else None

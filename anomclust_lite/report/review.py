"""The review file: what an inspector exported from the report page, read back by the CLI.

The page's *Export CSV* / *Export JSON* buttons write the clusters as shown
(at the K the slider is on, with the names typed and the images moved by
hand). Both files say the same thing; the JSON adds the K and per-cluster
facts.

``review.csv`` — UTF-8, one header line, one row per image, in the run's order::

    path,cluster,name,group,moved
    broken_large/000.png,0,broken glass,cluster,0
    good/001.png,,,good,0

- ``path``: the image path as shown in the report (relative to the folder
  given to ``fit``/``assign``; bytes that are not UTF-8 appear as ``\\xNN``);
- ``path`` and ``name`` are written through
  :func:`~anomclust_lite.files.safe_text.csv_cell` (by the page and by
  :func:`review_csv`): text a spreadsheet would run as a formula (``=``,
  ``+``, ``-``, ``@``, TAB, CR) or that starts with ``'`` gets a leading
  ``'``; reading strips it (:func:`~anomclust_lite.files.safe_text.csv_text`),
  so names round-trip. The JSON file holds the text as it is;
- ``cluster``: cluster id at the exported K, ``0 .. K-1``; empty for an image
  in no cluster (the good group); for a possible new type, its nearest cluster;
- ``name``: the name given to that cluster (empty when none, and for the good
  and new-type groups);
- ``group``: ``cluster``, ``good`` or ``new`` (possible new type);
- ``moved``: 1 when the image was moved to this cluster by hand.

``review.json``::

    {"format": "anomclust_lite.review", "version": 1, "k": 5, "k_fit": 5,
     "title": "...", "command": "fit",
     "clusters": [{"cluster": 0, "name": "broken glass", "size": 12, "representative": "broken_large/003.png"}, ...],
     "images": [{"path": "...", "cluster": 0, "name": "...", "group": "cluster", "moved": false}, ...]}

:func:`read_review` reads either file (by its content, not its name) into a
:class:`Review`, validating it as hostile input; :func:`write_review` writes
the same formats from Python (what the page does, for scripts and tests).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..files.atomic import atomic_write_text
from ..files.safe_open import UnsafeFileError, read_regular
from ..files.safe_text import csv_cell, csv_text

__all__ = [
    "REVIEW_FORMAT",
    "REVIEW_VERSION",
    "REVIEW_COLUMNS",
    "REVIEW_GROUPS",
    "REVIEW_CSV_NAME",
    "REVIEW_JSON_NAME",
    "MAX_REVIEW_BYTES",
    "ReviewImage",
    "Review",
    "read_review",
    "parse_review",
    "review_csv",
    "review_json",
    "write_review",
    "carry_names",
]

#: ``format`` entry of a review JSON file.
REVIEW_FORMAT = "anomclust_lite.review"
#: Version of the review layout; :func:`read_review` refuses others.
REVIEW_VERSION = 1
#: Header of ``review.csv``.
REVIEW_COLUMNS = ("path", "cluster", "name", "group", "moved")
#: Values of the ``group`` column.
REVIEW_GROUPS = ("cluster", "good", "new")
#: File names the page gives its downloads.
REVIEW_CSV_NAME = "review.csv"
REVIEW_JSON_NAME = "review.json"
#: Larger files are refused before they are parsed (about 1 kB per image for a million images).
MAX_REVIEW_BYTES = 256 * 1024 * 1024
_MAX_NAME = 200


@dataclass(frozen=True)
class ReviewImage:
    """One image of a review: where the inspector left it."""

    path: str
    cluster: Optional[int]
    group: str = "cluster"
    moved: bool = False


@dataclass(frozen=True)
class Review:
    """An exported review.

    Attributes
    ----------
    k : int
        Number of clusters at export.
    names : dict int -> str
        Names given to clusters (only the named ones).
    images : tuple of ReviewImage
        In the run's order.
    """

    k: int
    names: Dict[int, str]
    images: Tuple[ReviewImage, ...]

    def clusters(self) -> Dict[str, Optional[int]]:
        """``{path: cluster}`` (None for an image in no cluster)."""
        return {im.path: im.cluster for im in self.images}

    def shared_images(self, paths: Iterable[str], source: str = "the review") -> List[ReviewImage]:
        """The reviewed images whose path is in ``paths``, in the review's order.

        Raises
        ------
        ValueError
            None is (``source`` names the review in the message): the review
            was exported from a run on another folder.
        """
        wanted = set(paths)
        shared = [im for im in self.images if im.path in wanted]
        if not shared:
            raise ValueError(f"{source} names none of this run's images; was it exported from a run on another folder?")
        return shared


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"{where}: a cluster name must be text; got {type(name).__name__}")
    if len(name) > _MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise ValueError(f"{where}: a cluster name must be at most {_MAX_NAME} characters without control "
                         f"characters; got {name[:40]!r}")
    return name.strip()


def _check_cluster(value: object, where: str) -> Optional[int]:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: cluster must be an integer >= 0 or empty; got {value!r}")
    try:
        c = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cluster must be an integer >= 0 or empty; got {value!r}") from None
    if c < 0 or (isinstance(value, float) and value != c):
        raise ValueError(f"{where}: cluster must be an integer >= 0 or empty; got {value!r}")
    return c


def _image(path: object, cluster: object, group: object, moved: object, where: str) -> ReviewImage:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: path must be non-empty text; got {path!r}")
    if group not in REVIEW_GROUPS:
        raise ValueError(f"{where}: group must be one of {', '.join(REVIEW_GROUPS)}; got {group!r}")
    c = _check_cluster(cluster, where)
    if c is None and group != "good":
        raise ValueError(f"{where}: only images of the good group may have no cluster")
    if moved not in (True, False, "0", "1", 0, 1):
        raise ValueError(f"{where}: moved must be 0 or 1; got {moved!r}")
    return ReviewImage(path, c, str(group), moved in (True, "1", 1))


def _names(pairs: Sequence[Tuple[Optional[int], str, str]]) -> Dict[int, str]:
    """``{cluster: name}`` from (cluster, name, where) triples, refusing two names for one cluster."""
    names: Dict[int, str] = {}
    for cluster, raw, where in pairs:
        name = _check_name(raw, where)
        if cluster is None or not name:
            continue
        if names.setdefault(cluster, name) != name:
            raise ValueError(f"{where}: cluster {cluster} is named both {names[cluster]!r} and {name!r}")
    return names


def _finish(images: List[ReviewImage], names: Dict[int, str], k: Optional[int], source: str) -> Review:
    if not images:
        raise ValueError(f"{source}: the review lists no images")
    seen = set()
    for im in images:
        if im.path in seen:
            raise ValueError(f"{source}: image {im.path!r} is listed twice")
        seen.add(im.path)
    top = max([im.cluster for im in images if im.cluster is not None] + list(names) + [-1])
    k = top + 1 if k is None else k
    if top >= k:
        raise ValueError(f"{source}: cluster {top} is outside 0..{k - 1} for K = {k}")
    return Review(k=k, names=dict(sorted(names.items())), images=tuple(images))


def _parse_csv(text: str, source: str) -> Review:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != REVIEW_COLUMNS:
        raise ValueError(f"{source}: the first line must be the header {','.join(REVIEW_COLUMNS)}; got {header!r}")
    images, pairs = [], []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        where = f"{source} line {line}"
        if len(row) != len(REVIEW_COLUMNS):
            raise ValueError(f"{where}: expected {len(REVIEW_COLUMNS)} fields, got {len(row)}")
        path, cluster, name, group, moved = row
        path, name = csv_text(path), csv_text(name)
        im = _image(path, cluster, group, moved, where)
        images.append(im)
        pairs.append((im.cluster if im.group == "cluster" else None, name, where))
    return _finish(images, _names(pairs), None, source)


def _parse_json(text: str, source: str) -> Review:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ValueError(f"{source}: not a review file (JSON nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != REVIEW_FORMAT:
        raise ValueError(f"{source}: not a review file (format must be {REVIEW_FORMAT!r})")
    if data.get("version") != REVIEW_VERSION:
        raise ValueError(f"{source}: review version {data.get('version')!r} is not supported (expected {REVIEW_VERSION})")
    k = _check_cluster(data.get("k"), f"{source} k")
    if not k:
        raise ValueError(f"{source}: k must be an integer >= 1; got {data.get('k')!r}")
    rows, clusters = data.get("images"), data.get("clusters", [])
    if not isinstance(rows, list) or not isinstance(clusters, list):
        raise ValueError(f"{source}: images and clusters must be lists")
    images = []
    for j, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source} images[{j}]: must be an object; got {type(row).__name__}")
        images.append(_image(row.get("path"), row.get("cluster"), row.get("group", "cluster"),
                             row.get("moved", False), f"{source} images[{j}]"))
    pairs = []
    for j, row in enumerate(clusters):
        if not isinstance(row, dict):
            raise ValueError(f"{source} clusters[{j}]: must be an object; got {type(row).__name__}")
        pairs.append((_check_cluster(row.get("cluster"), f"{source} clusters[{j}]"), row.get("name", ""),
                      f"{source} clusters[{j}]"))
    return _finish(images, _names(pairs), k, source)


def parse_review(text: str, source: str = "review") -> Review:
    """Parse the text of a review CSV or JSON file (JSON when it starts with ``{``).

    Examples
    --------
    >>> r = parse_review("path,cluster,name,group,moved\\na.png,1,crack,cluster,0\\nb.png,,,good,0\\n")
    >>> r.k, r.names, r.clusters()
    (2, {1: 'crack'}, {'a.png': 1, 'b.png': None})
    """
    if not isinstance(text, str):
        raise ValueError(f"{source}: text must be a str; got {type(text).__name__}")
    body = text.lstrip("\ufeff")
    if body.lstrip().startswith("{"):
        return _parse_json(body, source)
    try:
        return _parse_csv(body, source)
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise ValueError(f"{source}: not a valid review CSV ({' '.join(str(exc).split())})") from None


def read_review(path: "str | os.PathLike[str]") -> Review:
    """Read a review file exported from the report (CSV or JSON, see the module docstring).

    Raises
    ------
    ValueError
        The file is too large, not UTF-8, or not a valid review; the message
        names the file and, for a bad row, its line.
    """
    name = os.fsdecode(os.fspath(path)).encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        raw = read_regular(path, MAX_REVIEW_BYTES)
    except UnsafeFileError as exc:
        reason = f"larger than {MAX_REVIEW_BYTES} bytes" if exc.too_large else exc.reason
        raise ValueError(f"{name}: {reason}; not a review file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not UTF-8 text; not a review file") from None
    return parse_review(text, name)


def _rows(review: Review) -> List[Tuple[str, str, str, str, str]]:
    out = []
    for im in review.images:
        name = review.names.get(im.cluster, "") if im.group == "cluster" and im.cluster is not None else ""
        out.append((im.path, "" if im.cluster is None else str(im.cluster), name, im.group, "1" if im.moved else "0"))
    return out


def _csv_field(value: str) -> str:
    """A CSV field quoted when it holds a comma, a quote, CR or LF (as the page does)."""
    return '"' + value.replace('"', '""') + '"' if any(ch in value for ch in ',"\r\n') else value


def review_csv(review: Review) -> str:
    """The CSV text of ``review``, byte for byte as the page writes it (LF line ends; path and name marked)."""
    rows = [(csv_cell(path), cluster, csv_cell(name), group, moved) for path, cluster, name, group, moved in _rows(review)]
    lines = [",".join(REVIEW_COLUMNS)] + [",".join(map(_csv_field, row)) for row in rows]
    return "\n".join(lines) + "\n"


def review_json(review: Review, extra: Optional[Mapping[str, object]] = None) -> str:
    """The JSON text of ``review``; ``extra`` adds top-level entries (title, command, ...)."""
    sizes: Dict[int, int] = {}
    for im in review.images:
        if im.group == "cluster" and im.cluster is not None:
            sizes[im.cluster] = sizes.get(im.cluster, 0) + 1
    data: Dict[str, object] = {"format": REVIEW_FORMAT, "version": REVIEW_VERSION, "k": review.k}
    data.update(extra or {})
    data["clusters"] = [{"cluster": c, "name": review.names.get(c, ""), "size": sizes.get(c, 0)}
                        for c in range(review.k)]
    data["images"] = [{"path": p, "cluster": None if c == "" else int(c), "name": n, "group": g, "moved": m == "1"}
                      for p, c, n, g, m in _rows(review)]
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def write_review(path: "str | os.PathLike[str]", review: Review) -> None:
    """Write ``review`` as JSON when ``path`` ends in ``.json``, else as CSV (atomically)."""
    text = review_json(review) if os.fspath(path).endswith(".json") else review_csv(review)
    atomic_write_text(path, text)


def carry_names(review: Review, clusters: Mapping[str, int], k: int) -> Dict[int, str]:
    """Names of a review carried over to a run's clusters by the images they share.

    Each cluster ``c`` of the run (``clusters``: path -> cluster id ``0..k-1``,
    negative for images in no cluster) takes the name that more than half of
    its reviewed images carry in ``review`` (the name of the review cluster the
    inspector left them in, moves included). A cluster without such a majority
    gets no name. Works for the run the review was exported from (names by
    cluster, at the exported K) and for a later run of overlapping images.

    Raises
    ------
    ValueError
        The review and the run share no image.

    Examples
    --------
    >>> review = Review(2, {0: "scratch"}, (ReviewImage("a.png", 0), ReviewImage("b.png", 0), ReviewImage("c.png", 1)))
    >>> carry_names(review, {"a.png": 1, "b.png": 1, "c.png": 0}, 2)
    {1: 'scratch'}
    """
    shared = review.shared_images(clusters)
    votes: List[Dict[str, int]] = [{} for _ in range(k)]
    for im in shared:
        c = clusters[im.path]
        if not 0 <= c < k:
            continue
        name = review.names.get(im.cluster, "") if im.group == "cluster" and im.cluster is not None else ""
        votes[c][name] = votes[c].get(name, 0) + 1
    names: Dict[int, str] = {}
    for c, counted in enumerate(votes):
        total = sum(counted.values())
        best = max(counted.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        if best[0] and 2 * best[1] > total:
            names[c] = best[0]
    return names

"""``anomclust-lite name OUT 3=scratch 5=crack``: name the clusters of a run by hand, and the names in force.

The names are kept in the run's model.npz (so ``assign`` writes them into
assignments.csv) and written into the ``name`` column of its clusters.csv.
``--review FILE`` reads the names from the report's export (review.csv or
review.json): each cluster takes the name most of its images carry in the
review (:func:`anomclust_lite.report.review.carry_names`); ``ID=NAME`` given
on the command line win over the review's.

The names in force (:func:`cluster_names`, written by the cluster and assign
commands) are the hand-set names, else each cluster's majority folder label
recorded at fit time (:func:`cluster_majorities`), and ``good`` for the
good group.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import numpy as np

from ..estimator.clusterer import AnomalyClusterer
from ..features.images import display_path
from ..files.safe_text import csv_text
from .console import one_line
from .out_dir import release_locks
from .output_set import check_member, open_run_folder, read_manifest, staged_outputs
from .outputs import PROG, write_csv

if TYPE_CHECKING:  # the report stack is imported only when a review is read
    from ..report.review import Review

__all__ = ["build_name_parser", "parse_names", "run_name", "name_command", "cluster_majorities", "majority_names",
           "fit_notes", "cluster_names"]

#: Longest cluster name accepted.
MAX_NAME_LENGTH = 80


class _NameParser(argparse.ArgumentParser):
    """Options and ``ID=NAME`` in any order; neither ``ID=NAME`` nor ``--review`` is a usage error (exit 2)."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed = super().parse_intermixed_args(args, namespace)
        if not parsed.names and parsed.review is None:
            self.error("give ID=NAME pairs, --review FILE, or both")
        return parsed


def build_name_parser() -> argparse.ArgumentParser:
    """The parser of ``anomclust-lite name OUT [ID=NAME ...] [--review FILE]``."""
    p = _NameParser(
        prog=f"{PROG} name",
        description="Name the clusters of an earlier run: the names are stored in OUT/model.npz (assign writes "
                    "them into assignments.csv) and in the name column of OUT/clusters.csv. An empty name "
                    "(3=) removes a name.",
    )
    p.add_argument("out", metavar="OUT", help="output folder of a clustering run (holding model.npz)")
    p.add_argument("names", nargs="*", metavar="ID=NAME", help="cluster id and its name, e.g. 3=scratch")
    p.add_argument("--review", metavar="FILE",
                   help="review.csv or review.json exported from the run's report: each cluster takes the name "
                        "most of its images carry there (ID=NAME arguments win)")
    p.add_argument("-q", "--quiet", action="store_true", help="no messages on stdout")
    return p


def parse_names(items: Sequence[str], k: int) -> Dict[int, str]:
    """``["3=scratch", ...]`` -> ``{3: "scratch"}``; raises ValueError naming the bad item."""
    names: Dict[int, str] = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or not key.strip().lstrip("-").isdigit():
            raise ValueError(f"{item!r} is not ID=NAME (for example 3=scratch)")
        cluster = int(key)
        if not 0 <= cluster < k:
            raise ValueError(f"{item!r}: cluster {cluster} does not exist; the run has clusters 0..{k - 1}")
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH or not name.isprintable() or "," in name or '"' in name:
            raise ValueError(f"{item!r}: a name is at most {MAX_NAME_LENGTH} printable characters, without , or \"")
        names[cluster] = name
    return names


def _read_clusters_csv(path: Path) -> List[List[str]]:
    """Rows of a run's clusters.csv (header first), cells as written to csv_cell; [] when it has no cluster column."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows: List[List[str]] = [[csv_text(cell) for cell in row] for row in csv.reader(fh)]
    return rows if rows and "name" in rows[0] and "cluster" in rows[0] and "path" in rows[0] else []


def review_names(review_file: str, clusters_csv: Path, k: int) -> Dict[int, str]:
    """The names a review gives the run's clusters, matched through the paths in clusters.csv."""
    from ..report.review import carry_names, read_review  # the report stack only when a review is read

    review = read_review(review_file)
    if not clusters_csv.is_file():
        raise ValueError(f"{display_path(clusters_csv)} is missing: the review's images cannot be matched to clusters")
    rows = _read_clusters_csv(clusters_csv)
    if not rows:
        raise ValueError(f"{display_path(clusters_csv)} has no path and cluster columns; not a run's clusters.csv")
    pi, ci = rows[0].index("path"), rows[0].index("cluster")
    clusters = {r[pi]: int(r[ci]) for r in rows[1:]
                if len(r) > max(pi, ci) and r[ci].lstrip("-").isdigit()}
    review.shared_images(clusters, f"the review {display_path(review_file)}")
    return carry_names(review, clusters, k)


def read_review_for(review_file: str, paths: Sequence[str]) -> "Review":
    """The review in ``review_file``, refused when it names none of ``paths`` (checked before the long work)."""
    from ..report.review import read_review

    review = read_review(review_file)
    review.shared_images(paths, f"the review {display_path(review_file)}")
    return review


def apply_review_names(model: AnomalyClusterer, review: "Review", paths: Sequence[str]) -> Dict[int, str]:
    """Name ``model``'s clusters from ``review`` (its images at ``paths``); returns the names given."""
    from ..report.review import carry_names

    carried = carry_names(review, dict(zip(paths, (int(v) for v in model.labels_))), model.k_)
    model.metadata_ = dict(model.metadata_, cluster_names={str(c): v for c, v in sorted(carried.items())})
    return carried


def _rewrite_clusters_csv(path: Path, names: Dict[int, str], target: Path) -> None:
    """Write clusters.csv (``path``) with the clusters' names in its ``name`` column to ``target`` (if it has one)."""
    rows = _read_clusters_csv(path)
    if not rows:
        return
    ci, ni = rows[0].index("cluster"), rows[0].index("name")
    for row in rows[1:]:
        if len(row) > max(ci, ni) and row[ci].lstrip("-").isdigit() and int(row[ci]) in names:
            row[ni] = names[int(row[ci])]
    write_csv(target, rows[0], rows[1:])


def name_command(args: argparse.Namespace) -> int:
    """``anomclust-lite name`` for parsed options: :func:`run_name`; exit status 0, or 1 with one error line."""
    try:
        run_name(args)
        return 0
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        release_locks()


def run_name(args: argparse.Namespace) -> Dict[int, str]:
    """Store the names given in ``args``; returns the names now in force.

    In a run's output folder the folder is locked, an interrupted write there
    is finished (or dropped) first, model.npz and clusters.csv are checked
    against the manifest, and the two are replaced together
    (:mod:`.output_set`).
    """
    out = Path(args.out)
    path = (out / "model.npz" if out.is_dir() else out).resolve()
    in_run_folder = open_run_folder(path.parent)
    clusters_csv = path.parent / "clusters.csv"
    for member in (path, clusters_csv):
        if member.is_file():
            check_member(member)
    model = AnomalyClusterer.load(path)
    given = parse_names(args.names, model.k_)
    stored = {int(c): str(v) for c, v in model.metadata_.get("cluster_names", {}).items()}
    if args.review is not None:
        stored.update(review_names(args.review, clusters_csv, model.k_))
    stored.update(given)
    stored = {c: v for c, v in stored.items() if v}
    model.metadata_ = dict(model.metadata_, cluster_names={str(c): v for c, v in sorted(stored.items())})
    majority = majority_names(model)
    shown = {c: stored.get(c, majority.get(c, "")) for c in range(model.k_)}
    if in_run_folder:
        manifest = read_manifest(path.parent) or {}
        with staged_outputs(path.parent, str(manifest.get("command", "cluster")), keep=True) as stage:
            _write_named(model, path, clusters_csv, stage, shown)
    else:
        _write_named(model, path, clusters_csv, path.parent, shown)
    if not args.quiet:
        print(f"names in {display_path(path)}: " + ", ".join(f"{c}={v or '-'}" for c, v in shown.items()))
    return stored


def _write_named(model: AnomalyClusterer, path: Path, clusters_csv: Path, into: Path, shown: Dict[int, str]) -> None:
    """model.npz (as ``path``'s name) and, when there is one, clusters.csv with the names, into the folder ``into``."""
    model.save(into / path.name)
    if clusters_csv.is_file():
        _rewrite_clusters_csv(clusters_csv, shown, into / clusters_csv.name)


def cluster_majorities(labels: np.ndarray, k: int, labels_true: Sequence[str]) -> List[Dict[str, Any]]:
    """Per cluster, its majority folder label, purity (the fraction of its images with that label) and size."""
    out = []
    truth = np.asarray(labels_true, dtype=object)
    for c in range(k):
        values, counts = np.unique(truth[labels == c].astype(str), return_counts=True)
        best = int(np.argmax(counts))
        out.append({"cluster": c, "majority": str(values[best]), "purity": float(counts[best] / counts.sum()),
                    "size": int(counts.sum())})
    return out


def majority_names(model: AnomalyClusterer) -> Dict[int, str]:
    """Each cluster's majority folder label, as recorded in the model at fit time (:func:`cluster_majorities`)."""
    return {int(e["cluster"]): str(e["majority"]) for e in model.metadata_.get("clusters", [])
            if isinstance(e, dict) and "cluster" in e and "majority" in e}


def fit_notes(model: AnomalyClusterer) -> Dict[int, str]:
    """What the fit knew of each cluster (:func:`cluster_majorities`), for the headings of the assign report:
    ``"fitted: 32 images, 47 % contamination"`` (models saved before sizes were recorded: no size).

    A name is only the label most of a cluster's images had; this says how far it held. Entries a
    model file does not hold in that form are left out, like :func:`majority_names` does."""
    notes = {}
    for e in model.metadata_.get("clusters", []):
        try:
            c, majority, purity = int(e["cluster"]), str(e["majority"]), float(e["purity"])
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= c < model.k_ and 0.0 <= purity <= 1.0:
            size = e.get("size")
            count = f"{size} images, " if isinstance(size, int) and not isinstance(size, bool) and size > 0 else ""
            notes[c] = f"fitted: {count}{purity * 100:.0f} % {majority}"
    return notes


def cluster_names(model: AnomalyClusterer) -> Dict[int, str]:
    """Names of the clusters: set by hand ('name' command), else the majority label known at fit time."""
    names = majority_names(model)
    names.update({int(c): str(v) for c, v in model.metadata_.get("cluster_names", {}).items()})
    if model.good_group_:
        names[-1] = "good"
    return names

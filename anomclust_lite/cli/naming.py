"""``anomclust-lite name OUT 3=scratch 5=crack``: name the clusters of a run by hand.

The names are kept in the run's model.npz (so ``assign`` writes them into
assignments.csv) and written into the ``name`` column of its clusters.csv.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Sequence

from ..estimator.clusterer import AnomalyClusterer
from ..features.images import display_path
from .outputs import PROG, write_csv

__all__ = ["build_name_parser", "parse_names", "run_name"]

#: Longest cluster name accepted.
MAX_NAME_LENGTH = 80


def build_name_parser() -> argparse.ArgumentParser:
    """The parser of ``anomclust-lite name OUT ID=NAME [ID=NAME ...]``."""
    p = argparse.ArgumentParser(
        prog=f"{PROG} name",
        description="Name the clusters of an earlier run: the names are stored in OUT/model.npz (assign writes "
                    "them into assignments.csv) and in the name column of OUT/clusters.csv. An empty name "
                    "(3=) removes a name.",
    )
    p.add_argument("out", metavar="OUT", help="output folder of a clustering run (holding model.npz)")
    p.add_argument("names", nargs="+", metavar="ID=NAME", help="cluster id and its name, e.g. 3=scratch")
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


def _rewrite_clusters_csv(path: Path, names: Dict[int, str]) -> None:
    """Put the clusters' names into the ``name`` column of clusters.csv (if the file has one)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows: List[List[str]] = list(csv.reader(fh))
    if not rows or "name" not in rows[0] or "cluster" not in rows[0]:
        return
    ci, ni = rows[0].index("cluster"), rows[0].index("name")
    for row in rows[1:]:
        if len(row) > max(ci, ni) and row[ci].lstrip("-").isdigit() and int(row[ci]) in names:
            row[ni] = names[int(row[ci])]
    write_csv(path, rows[0], rows[1:])


def run_name(args: argparse.Namespace) -> Dict[int, str]:
    """Store the names given in ``args``; returns the names now in force."""
    out = Path(args.out)
    path = out / "model.npz" if out.is_dir() else out
    model = AnomalyClusterer.load(path)
    given = parse_names(args.names, model.k_)
    stored = {int(c): str(v) for c, v in model.metadata_.get("cluster_names", {}).items()}
    stored.update(given)
    stored = {c: v for c, v in stored.items() if v}
    model.metadata_ = dict(model.metadata_, cluster_names={str(c): v for c, v in sorted(stored.items())})
    model.save(path)
    majority = {int(e["cluster"]): str(e["majority"]) for e in model.metadata_.get("clusters", [])
                if isinstance(e, dict) and "cluster" in e and "majority" in e}
    shown = {c: stored.get(c, majority.get(c, "")) for c in range(model.k_)}
    if (path.parent / "clusters.csv").is_file():
        _rewrite_clusters_csv(path.parent / "clusters.csv", shown)
    if not args.quiet:
        print(f"names in {display_path(path)}: " + ", ".join(f"{c}={v or '-'}" for c, v in shown.items()))
    return stored

"""The files a clustering run writes: CSV and JSON tables, the HTML report, exported folders.

Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..files.atomic import atomic_open, atomic_write_text
from ..estimator.clusterer import AnomalyClusterer
from ..features.images import display_path

__all__ = ["PROG", "EXPORT_MARKER", "write_csv", "write_json", "export_clusters", "write_report", "write_assign_report"]

#: The command-line program's name, as written into outputs and messages.
PROG = "anomclust-lite"
#: Marker file in each exported cluster folder, so a rerun may replace it.
EXPORT_MARKER = ".anomclust-export"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def export_clusters(out: Path, folder: Path, paths: Sequence[Path], labels: np.ndarray, mode: str) -> None:
    """Put the images into OUT/cluster_<k>/ (symlinks or copies), replacing an earlier export.

    File names are the paths relative to ``folder`` with ``/`` replaced by
    ``__`` (so ``good/000.png`` becomes ``good__000.png``); a name that still
    collides gets ``_2``, ``_3``, ... before its extension, in path order.
    """
    for old in sorted(out.glob("cluster_*")):
        if old.is_dir() and not old.is_symlink():
            if not (old / EXPORT_MARKER).exists():
                raise ValueError(
                    f"{display_path(old)} exists and was not made by {PROG}; remove it or choose another --out"
                )
            shutil.rmtree(old)
    used: Dict[int, set] = {}
    for path, label in zip(paths, (int(v) for v in labels)):
        target_dir = out / f"cluster_{label}"
        if label not in used:
            target_dir.mkdir()
            atomic_write_text(target_dir / EXPORT_MARKER, f"made by {PROG} --export; replaced on rerun\n")
            used[label] = set()
        try:
            flat = path.relative_to(folder).as_posix().replace("/", "__")
        except ValueError:
            flat = path.name
        candidate, n = flat, 1
        while candidate in used[label]:
            n += 1
            stem, dot, ext = flat.rpartition(".")
            candidate = f"{stem}_{n}.{ext}" if dot else f"{flat}_{n}"
        used[label].add(candidate)
        target = target_dir / candidate
        if mode == "symlink":
            tmp = target_dir / f".{candidate}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(os.path.abspath(path), tmp)
            os.replace(tmp, target)
        else:
            with open(path, "rb") as src, atomic_open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copymode(path, target)


def write_report(
    out: Path,
    model: AnomalyClusterer,
    paths: Sequence[Path],
    rel: Sequence[str],
    labels_true: Optional[List[str]],
    extractor: Any,
    facts: Dict[str, object],
    metrics: Optional[Dict[str, float]],
    title: str,
) -> None:
    """Write OUT/report.html for a fitted model (see :mod:`anomclust_lite.report`)."""
    from ..report import render_report
    from ..report.build import ImageOptions, fit_run

    run = fit_run(model, paths, rel, ImageOptions.of(extractor), labels=labels_true, facts=facts,
                  metrics=metrics, title=title)
    atomic_write_text(out / "report.html", render_report(run))


def write_assign_report(
    out: Path,
    model: AnomalyClusterer,
    assignment: Any,
    paths: Sequence[Path],
    rel: Sequence[str],
    extractor: Any,
    facts: Dict[str, object],
    title: str,
) -> None:
    """Write OUT/report.html for images assigned to a fitted model's clusters."""
    from ..report import render_report
    from ..report.build import ImageOptions, assign_run

    run = assign_run(model, assignment, paths, rel, ImageOptions.of(extractor), facts=facts, title=title)
    atomic_write_text(out / "report.html", render_report(run))

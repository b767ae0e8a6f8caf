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
from ..files.safe_text import csv_cell
from ..estimator.clusterer import AnomalyClusterer
from .out_dir import EXPORT_MARKER, remove_exports, write_export_marker

__all__ = ["PROG", "EXPORT_MARKER", "write_csv", "write_json", "optional_number", "export_clusters", "write_report",
           "write_assign_report"]

#: The command-line program's name, as written into outputs and messages.
PROG = "anomclust-lite"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A CSV table; a text cell a spreadsheet would run as a formula gets a leading ``'`` (:func:`csv_cell`)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([csv_cell(cell) for cell in row] for row in rows)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def optional_number(value: float) -> str:
    """A CSV cell: the number, or empty for NaN (confidence of images in the good group)."""
    return "" if not np.isfinite(value) else f"{value:.4f}"


def export_clusters(out: Path, folder: Path, paths: Sequence[Path], labels: np.ndarray, mode: str) -> None:
    """Put the images into OUT/cluster_<k>/ (symlinks or copies), replacing an earlier export.

    File names are the paths relative to ``folder`` with ``/`` replaced by
    ``__`` (so ``good/000.png`` becomes ``good__000.png``); a name that still
    collides gets ``_2``, ``_3``, ... before its extension, in path order.
    Only our earlier export is deleted, file by file (see :mod:`.out_dir`);
    each folder's marker lists its names before any file is written.
    """
    plan = _export_plan(folder, paths, labels)
    remove_exports(out)
    for label, items in plan.items():
        target_dir = out / f"cluster_{label}"
        target_dir.mkdir()
        write_export_marker(target_dir, [name for name, _ in items])
        for name, path in items:
            _export_one(path, target_dir, name, mode)


def _export_plan(folder: Path, paths: Sequence[Path], labels: np.ndarray) -> Dict[int, List[Tuple[str, Path]]]:
    """label -> [(file name in cluster_<label>, source path)], names unique per folder."""
    plan: Dict[int, List[Tuple[str, Path]]] = {}
    used: Dict[int, set] = {}
    for path, label in zip(paths, (int(v) for v in labels)):
        try:
            flat = path.relative_to(folder).as_posix().replace("/", "__")
        except ValueError:
            flat = path.name
        taken = used.setdefault(label, {EXPORT_MARKER})
        candidate, n = flat, 1
        while candidate in taken:
            n += 1
            stem, dot, ext = flat.rpartition(".")
            candidate = f"{stem}_{n}.{ext}" if dot else f"{flat}_{n}"
        taken.add(candidate)
        plan.setdefault(label, []).append((candidate, path))
    return plan


def _export_one(path: Path, target_dir: Path, name: str, mode: str) -> None:
    target = target_dir / name
    if mode == "symlink":
        tmp = target_dir / f".{name}.tmp"
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
    names: Optional[Dict[int, str]] = None,
) -> None:
    """Write OUT/report.html for a fitted model (see :mod:`anomclust_lite.report`), with its trust fields."""
    from ..report import render_report
    from ..report.build import ImageOptions, TrustFields, fit_run

    # the good group (label -1) is a group of its own in the page; it has no cluster to be confident about (NaN)
    trust = TrustFields(anomaly_score=model.anomaly_scores_, confidence=model.confidence_, is_good=model.is_good_,
                        cluster_names=names or None)
    warnings = tuple(f"weak clustering: {reason}" for reason in model.weak_)
    run = fit_run(model, paths, rel, ImageOptions.of(extractor), labels=labels_true, trust=trust, facts=facts,
                  metrics=metrics, title=title, warnings=warnings)
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
    names: Optional[Dict[int, str]] = None,
    notes: Optional[Dict[int, str]] = None,
) -> None:
    """Write OUT/report.html for images assigned to a fitted model's clusters, with their trust fields
    (``notes``: a line per cluster on what the fit knew of it)."""
    from ..report import render_report
    from ..report.build import ImageOptions, TrustFields, assign_run

    trust = TrustFields(anomaly_score=assignment.anomaly_scores, confidence=assignment.confidence,
                        novelty=assignment.novelty, is_good=assignment.is_good, new_type=assignment.new_type,
                        cluster_names=names or None, cluster_notes=notes or None)
    run = assign_run(model, assignment, paths, rel, ImageOptions.of(extractor), trust=trust, facts=facts,
                     title=title)
    atomic_write_text(out / "report.html", render_report(run))

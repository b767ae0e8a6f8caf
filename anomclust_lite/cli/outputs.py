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
from ..features.images import DEFAULT_MAX_PIXELS, ImageLoadError, display_path

__all__ = ["PROG", "EXPORT_MARKER", "THUMBNAIL_SIZE", "write_csv", "write_json", "thumbnail", "export_clusters", "write_report"]

#: The command-line program's name, as written into outputs and messages.
PROG = "anomclust-lite"
#: Marker file in each exported cluster folder, so a rerun may replace it.
EXPORT_MARKER = ".anomclust-export"
#: Longer side of the report's thumbnails, in pixels.
THUMBNAIL_SIZE = 128


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def thumbnail(path: Path, weights: Optional[np.ndarray], grid: Tuple[int, int], resize: int,
               crop: Optional[int], max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    from PIL import Image

    from ..report.heatmap import model_view, overlay_weights
    from ..features.images import load_image
    from ..report.html import image_data_uri

    try:
        view = model_view(load_image(path, max_pixels=max_pixels), resize=resize, crop=crop)
    except (ImageLoadError, OSError):
        view = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (200, 200, 200))
    w, h = view.size
    scale = THUMBNAIL_SIZE / max(w, h)
    thumb = view.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    if weights is not None:
        thumb = overlay_weights(thumb, weights, grid)
    return image_data_uri(thumb, fmt="JPEG", quality=80)


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
    from ..report.html import ReportImage, cluster_size_chart, dendrogram_image, render_report

    grid = tuple(int(v) for v in extractor.grid)
    show_weights = model.weights != "uniform"
    top_scores = model.scores_.max(axis=1)
    items = []
    for i, path in enumerate(paths):
        uri = thumbnail(path, model.weights_[i] if show_weights else None, grid, extractor.resize, extractor.crop,
                         getattr(extractor, "max_pixels", DEFAULT_MAX_PIXELS))
        items.append(
            ReportImage(
                path=rel[i],
                cluster=int(model.labels_[i]),
                thumbnail=uri,
                label=None if labels_true is None else labels_true[i],
                distance=float(model.center_distances_[i]),
                score=float(top_scores[i]),
            )
        )
    if model.linkage_ is not None:
        overview = dendrogram_image(model.linkage_, model.labels_, k=model.k_)
    else:
        overview = cluster_size_chart(np.bincount(model.labels_, minlength=model.k_).tolist())
    page = render_report(items, n_clusters=model.k_, title=title, overview=overview, facts=facts, metrics=metrics)
    atomic_write_text(out / "report.html", page)

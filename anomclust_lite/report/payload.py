"""The JSON the page is drawn from, built from a :class:`~anomclust_lite.report.data.ReportRun`.

Columnar: one list per field, indexed by image, so 2,000 images parse in a few
milliseconds and each thumbnail is embedded once. Optional fields are ``null``
when no image has them. Every string from the file system goes through
:func:`display_text` (bytes that are not UTF-8 become backslash escapes); the
page writes strings into the DOM as text, never as markup.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..files.hashing import sha256_chunks
from .charts import PALETTE
from .data import ReportImage, ReportRun
from .heatmap import OVERLAY_OPACITY, colormap, default_heat_range, heat_levels
from .review import REVIEW_COLUMNS, REVIEW_CSV_NAME, REVIEW_FORMAT, REVIEW_JSON_NAME, REVIEW_VERSION
from .thumbs import image_data_uri
from .views import cut_view, cuts, k_range, map_coordinates, neighbours, rounded

__all__ = ["PAYLOAD_FORMAT", "LOW_CONFIDENCE", "display_text", "run_id", "build_payload"]

#: ``format`` entry of the embedded data.
PAYLOAD_FORMAT = "anomclust_lite.report"
#: Images below this confidence are "low confidence" in the page's filter: their own centre is less
#: than 10 % nearer than the next one (typical confidences are 0.2-0.3; BENCHMARKS.md, issue 16).
LOW_CONFIDENCE = 0.1


def display_text(value: object) -> str:
    """``str(value)`` with characters that cannot be encoded (undecodable file names) as backslash escapes.

    Examples
    --------
    >>> display_text("img_\\udcff.png")
    'img_\\\\udcff.png'
    """
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _optional_floats(images: Sequence[ReportImage], field: str) -> Optional[List[Optional[float]]]:
    values = [getattr(it, field) for it in images]
    if all(v is None for v in values):
        return None
    return rounded([math.nan if v is None else float(v) for v in values])


def _optional_flags(images: Sequence[ReportImage], field: str) -> Optional[List[int]]:
    values = [getattr(it, field) for it in images]
    return None if all(v is None for v in values) else [int(bool(v)) for v in values]


def _heat(run: ReportRun) -> Optional[Dict[str, Any]]:
    grids = [None if it.heat is None else np.asarray(it.heat, dtype=np.float64) for it in run.images]
    present = [g for g in grids if g is not None]
    if not present:
        return None
    shape = present[0].shape
    if any(g.shape != shape for g in present):
        raise ValueError(f"every heat map must have the same grid; got {sorted({g.shape for g in present})}")
    lo, hi = run.heat_range if run.heat_range is not None else default_heat_range(np.stack(present))
    lut = colormap(np.linspace(0.0, 1.0, 256)).reshape(-1).tolist()
    maps = [None if g is None else base64.b64encode(heat_levels(g, lo, hi).tobytes()).decode("ascii") for g in grids]
    return {"grid": list(shape), "range": [float(lo), float(hi)], "label": display_text(run.heat_label),
            "lut": lut, "opacity": OVERLAY_OPACITY, "maps": maps}


def _views(run: ReportRun) -> Dict[str, Any]:
    k_min, k_max = k_range(run)
    cut = cuts(run) if k_min < k_max else {run.k: np.array([it.cluster for it in run.images], dtype=np.int64)}
    dist, reps = [], []
    for k in range(k_min, k_max + 1):
        d, r = cut_view(run, k, cut[k])
        dist.append(rounded(d))
        reps.append(r.tolist())
    return {"k_min": k_min, "k_max": k_max, "cuts": [cut[k].tolist() for k in range(k_min, k_max + 1)],
            "dist": dist, "reps": reps}


def _geometry(run: ReportRun) -> Dict[str, Any]:
    if run.distances is None or len(run.images) < 2:
        return {"map": None, "neighbours": None}
    d = np.asarray(run.distances, dtype=np.float64)
    xy = np.round(map_coordinates(d, run.embeddings), 4).tolist()
    return {"map": xy, "neighbours": neighbours(d).tolist()}


def _table(mapping: Optional[Dict[str, object]]) -> List[List[object]]:
    out: List[List[object]] = []
    for key, value in (mapping or {}).items():
        v = value if isinstance(value, (int, float)) and not isinstance(value, bool) else display_text(value)
        out.append([display_text(key), v if not isinstance(v, float) or math.isfinite(v) else None])
    return out


def run_id(data: Dict[str, Any]) -> str:
    """Identity of a report's run: the page keeps an inspector's names and moves under it.

    A hash of the title, command, fitted K, image paths and the cut at every K,
    so two reports share edits only when they show the same grouping of the same images.
    """
    key = [data["title"], data["command"], data["k_fit"], data["paths"], data["cuts"]]
    return sha256_chunks([json.dumps(key, separators=(",", ":")).encode("utf-8")])[:20]


def build_payload(run: ReportRun) -> Dict[str, Any]:
    """The page's data for a validated ``run`` (see :func:`anomclust_lite.report.data.check_run`)."""
    images = list(run.images)
    labels = [it.label for it in images]
    data: Dict[str, Any] = {
        "format": PAYLOAD_FORMAT, "version": 1, "title": display_text(run.title), "command": run.command,
        "n": len(images), "k_fit": run.k,
        "paths": [display_text(it.path) for it in images],
        "thumbs": [it.thumbnail for it in images],
        "labels": None if all(v is None for v in labels) else [display_text("" if v is None else v) for v in labels],
        "top_score": rounded([it.score for it in images]),
        "anomaly_score": _optional_floats(images, "anomaly_score"),
        "confidence": _optional_floats(images, "confidence"),
        "novelty": _optional_floats(images, "novelty"),
        "is_good": _optional_flags(images, "is_good"),
        "new_type": _optional_flags(images, "new_type"),
        "low_confidence": LOW_CONFIDENCE,
        "masks": None if all(it.mask is None for it in images) else [it.mask for it in images],
        "heat": _heat(run),
        "names": {str(int(c)): display_text(v) for c, v in (run.cluster_names or {}).items()},
        "notes": {str(int(c)): display_text(v) for c, v in (run.cluster_notes or {}).items()},
        "facts": _table(dict(run.facts or {})), "metrics": _table(dict(run.metrics or {})),
        "warnings": [display_text(w) for w in run.warnings],
        "overview": None if run.overview is None else image_data_uri(run.overview, fmt="PNG"),
        "palette": ["#%02x%02x%02x" % c for c in PALETTE],
        "review": {"format": REVIEW_FORMAT, "version": REVIEW_VERSION, "columns": list(REVIEW_COLUMNS),
                   "csv_name": REVIEW_CSV_NAME, "json_name": REVIEW_JSON_NAME},
    }
    data.update(_views(run))
    data.update(_geometry(run))
    data["run_id"] = run_id(data)
    return data

"""From a fitted model (or an assignment) and its image files to a :class:`ReportRun`.

The CLI's ``fit`` and ``assign`` call :func:`fit_run` / :func:`assign_run`;
the per-image trust fields (anomaly score, confidence, good group, new types,
novelty, cluster names) are passed in when the run has them and shown when
present.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.spatial.distance import cdist

from ..features.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .charts import cluster_size_chart, dendrogram_image
from .data import ReportImage, ReportRun
from .heatmap import default_heat_range
from .masks import mask_outline_uri
from .thumbs import fit_size, thumbnail_uri

__all__ = ["HEAT_RANGE_KEY", "ImageOptions", "TrustFields", "report_images", "fit_heat_range", "saved_heat_range",
           "fit_run", "assign_run"]

#: Entry of a saved model's metadata holding the fit's heat-map scale ``[lo, hi]``.
HEAT_RANGE_KEY = "report_heat_range"

PathLike = "str | os.PathLike[str]"


class ImageOptions:
    """How the model saw the images: ``resize``, ``crop``, feature ``grid`` (h, w), ``max_pixels``."""

    def __init__(self, resize: int, crop: Optional[int], grid: Tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.resize, self.crop, self.max_pixels = int(resize), crop, int(max_pixels)
        self.grid = (int(grid[0]), int(grid[1]))

    @classmethod
    def of(cls, extractor: Any) -> "ImageOptions":
        """The options of an :class:`anomclust_lite.Extractor` (or anything with the same attributes)."""
        return cls(extractor.resize, extractor.crop, tuple(extractor.grid),
                   getattr(extractor, "max_pixels", DEFAULT_MAX_PIXELS))


class TrustFields:
    """Optional per-image arrays (length N), and cluster names and notes (what the fit knew of each cluster), shown
    when given."""

    def __init__(self, *, anomaly_score: Optional[np.ndarray] = None, confidence: Optional[np.ndarray] = None,
                 novelty: Optional[np.ndarray] = None, is_good: Optional[np.ndarray] = None,
                 new_type: Optional[np.ndarray] = None, cluster_names: Optional[Mapping[int, str]] = None,
                 cluster_notes: Optional[Mapping[int, str]] = None) -> None:
        self.anomaly_score, self.confidence, self.novelty = anomaly_score, confidence, novelty
        self.is_good, self.new_type = is_good, new_type
        self.cluster_names, self.cluster_notes = cluster_names, cluster_notes

    def at(self, field: str, i: int) -> Any:
        """Image ``i``'s value of ``field``; None when not given or NaN (e.g. no confidence in the good group)."""
        values = getattr(self, field)
        if values is None:
            return None
        v = values[i]
        if field in ("is_good", "new_type"):
            return bool(v)
        return float(v) if math.isfinite(float(v)) else None


def _thumb_and_mask(path: PathLike, opts: ImageOptions) -> Tuple[str, Optional[str]]:
    try:
        image = load_image(path, max_pixels=opts.max_pixels)
    except (ImageLoadError, OSError):
        return thumbnail_uri(None, resize=opts.resize, crop=opts.crop), None
    view = (opts.crop, opts.crop) if opts.crop else (opts.resize, opts.resize)
    mask = mask_outline_uri(path, resize=opts.resize, crop=opts.crop, size=fit_size(view))
    return thumbnail_uri(image, resize=opts.resize, crop=opts.crop), mask


def report_images(paths: Sequence[PathLike], names: Sequence[str], clusters: np.ndarray, distances: np.ndarray,
                  opts: ImageOptions, *, labels: Optional[Sequence[str]] = None,
                  scores: Optional[np.ndarray] = None, trust: Optional[TrustFields] = None) -> list:
    """One :class:`ReportImage` per image: thumbnail, mask outline, heat map from ``scores`` (N, h*w)."""
    trust = trust or TrustFields()
    out = []
    for i, path in enumerate(paths):
        thumb, mask = _thumb_and_mask(path, opts)
        heat = None if scores is None else np.asarray(scores[i], dtype=np.float64).reshape(opts.grid)
        out.append(ReportImage(
            path=names[i], cluster=int(clusters[i]), thumbnail=thumb,
            label=None if labels is None else labels[i], distance=float(distances[i]),
            score=float("nan") if scores is None else float(np.max(scores[i])),
            anomaly_score=trust.at("anomaly_score", i), confidence=trust.at("confidence", i),
            novelty=trust.at("novelty", i), is_good=trust.at("is_good", i), new_type=trust.at("new_type", i),
            heat=heat, mask=mask))
    return out


def fit_heat_range(model: Any) -> Tuple[float, float]:
    """The heat-map scale of a fitted model: :func:`default_heat_range` of its patch scores."""
    return default_heat_range(model.scores_)


def saved_heat_range(model: Any) -> Optional[Tuple[float, float]]:
    """The fit's heat-map scale recorded in ``model.metadata_`` (None when absent or not two finite lo < hi)."""
    value = getattr(model, "metadata_", {}).get(HEAT_RANGE_KEY)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    lo, hi = float(value[0]), float(value[1])
    return (lo, hi) if lo < hi else None


def fit_run(model: Any, paths: Sequence[PathLike], names: Sequence[str], opts: ImageOptions, *,
            labels: Optional[Sequence[str]] = None, trust: Optional[TrustFields] = None,
            facts: Optional[Mapping[str, object]] = None, metrics: Optional[Mapping[str, float]] = None,
            title: str = "Anomaly clustering", warnings: Sequence[str] = ()) -> ReportRun:
    """The report of a fitted :class:`~anomclust_lite.AnomalyClusterer` (``model.labels_`` etc.).

    The heat maps use :func:`fit_heat_range` of the model, the scale :func:`assign_run` reuses.
    """
    trust = trust or TrustFields()
    images = report_images(paths, names, model.labels_, model.center_distances_, opts, labels=labels,
                           scores=model.scores_, trust=trust)
    clustered = model.labels_[model.labels_ >= 0]  # the good group (-1) is outside the tree
    if model.linkage_ is not None:
        overview = dendrogram_image(model.linkage_, clustered, k=model.k_)
    else:
        overview = cluster_size_chart(np.bincount(clustered, minlength=model.k_).tolist())
    return ReportRun(
        images=images, k=model.k_, title=title, command="fit", linkage=model.linkage_,
        k_max=getattr(model, "k_max", None), distances=model.distances_,
        embeddings=model.embeddings_ if model.distance == "wa" else None,
        representatives=[int(v) for v in model.medoids_], cluster_names=trust.cluster_names,
        heat_range=fit_heat_range(model),
        facts=facts, metrics=metrics, warnings=tuple(warnings), overview=overview)


def assign_run(model: Any, assignment: Any, paths: Sequence[PathLike], names: Sequence[str], opts: ImageOptions,
               *, labels: Optional[Sequence[str]] = None, trust: Optional[TrustFields] = None,
               facts: Optional[Mapping[str, object]] = None, title: str = "Assigned images",
               warnings: Sequence[str] = ()) -> ReportRun:
    """The report of ``model.assign(...)``: the model's K, new types as their own group.

    The assignment's patch ``scores`` (when present) draw the heat maps on the
    fit's scale when the model's metadata records it (:data:`HEAT_RANGE_KEY`),
    so a defect-free new image looks as cool as a defect-free fitted one; its
    WA ``embeddings`` give the map and the nearest neighbours.
    """
    trust = trust or TrustFields()
    scores, embeddings = getattr(assignment, "scores", None), getattr(assignment, "embeddings", None)
    if trust.new_type is None:
        trust.new_type = np.asarray(assignment.new_type)
    images = report_images(paths, names, assignment.labels, assignment.distances, opts, labels=labels,
                           scores=scores, trust=trust)
    dist = None if embeddings is None or len(images) < 2 else cdist(embeddings, embeddings)
    return ReportRun(images=images, k=model.k_, title=title, command="assign", distances=dist,
                     embeddings=embeddings if dist is not None else None, heat_range=saved_heat_range(model),
                     cluster_names=trust.cluster_names, cluster_notes=trust.cluster_notes, facts=facts,
                     warnings=tuple(warnings))

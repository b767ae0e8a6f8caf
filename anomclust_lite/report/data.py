"""What the report shows: one :class:`ReportImage` per image and one :class:`ReportRun` per page.

The page needs only paths, thumbnails and the fitted clusters. Everything else
is optional and shown when present:

- the linkage tree (``linkage``): the page can then regroup the images at any
  K from 2 to ``k_max`` without rerunning;
- the run's image distances (``distances``): the 2-D map, the nearest
  neighbours in the zoom view and the representative of every cluster at
  every K; with ``embeddings`` (the WA embeddings) the distance of an image to
  its cluster centre is recomputed for every K like the fit computes it;
- per-image scores (``anomaly_score``, ``confidence``, ``novelty``), the good
  and new-type flags (``is_good``, ``new_type``), cluster names, heat maps on
  one scale (``heat`` with ``ReportRun.heat_range``) and ground-truth mask
  outlines (``mask``).

Images with ``cluster = -1`` are not in any cluster: they belong to the good
group (``is_good``). When a linkage is given it covers the clustered images
(``cluster >= 0``) in their order in ``images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.validation import check_int

__all__ = ["ReportImage", "ReportRun", "COMMANDS", "check_run"]

#: The command whose result a page shows.
COMMANDS = ("fit", "assign")


@dataclass(frozen=True)
class ReportImage:
    """One image of the report.

    Attributes
    ----------
    path : str
        Path shown on the page, written into ``data-path`` and into the export.
    cluster : int
        Cluster at the fitted K (``0 .. k-1``), or -1 for an image in no
        cluster (the good group).
    thumbnail : str
        A ``data:`` URI (see :func:`anomclust_lite.report.thumbs.thumbnail_uri`).
    label : str, optional
        True label, when known.
    distance : float
        Distance to the cluster centre at the fitted K (NaN when unknown).
    score : float
        Top patch anomaly score (NaN when unknown).
    anomaly_score, confidence, novelty : float, optional
        Image anomaly score, confidence of the cluster assignment in [0, 1],
        novelty score of an assigned image.
    is_good, new_type : bool, optional
        The image is in the good group / flagged as a possible new type.
    heat : (h, w) array, optional
        Patch scores on the feature grid, drawn on the run's one scale.
    mask : str, optional
        PNG ``data:`` URI of the ground-truth mask outline at thumbnail size.
    """

    path: str
    cluster: int
    thumbnail: str
    label: Optional[str] = None
    distance: float = math.nan
    score: float = math.nan
    anomaly_score: Optional[float] = None
    confidence: Optional[float] = None
    novelty: Optional[float] = None
    is_good: Optional[bool] = None
    new_type: Optional[bool] = None
    heat: Optional[np.ndarray] = None
    mask: Optional[str] = None


@dataclass(frozen=True)
class ReportRun:
    """Everything one report page shows.

    Attributes
    ----------
    images : sequence of ReportImage
    k : int
        The fitted number of clusters (``>= 1``).
    title : str
    command : {"fit", "assign"}
    linkage : (n - 1, 4) array, optional
        SciPy linkage matrix of the ``n`` clustered images (``cluster >= 0``).
    k_max : int, optional
        Largest K the page offers (default: ``max(k, 15)``, at most ``n``).
    distances : (N, N) array, optional
        Distances between all images (map, neighbours, representatives).
    embeddings : (N, D) array, optional
        WA embeddings: centre distances at every K are Euclidean to the mean.
    representatives : sequence of int, optional
        Index (into ``images``) of each fitted cluster's representative image.
    heat_range : (float, float), optional
        Patch scores drawn as the coolest / hottest colour (default: the
        median and the 99.9th percentile of all heat values).
    heat_label : str
        What the heat maps show, under the colour bar.
    cluster_names : mapping int -> str, optional
        Names of the fitted clusters.
    cluster_notes : mapping int -> str, optional
        A line on each fitted cluster shown in its heading at the fitted K
        (the assign report: its size and purity at the fit).
    facts, metrics : mapping, optional
        Key/value facts about the run, and metrics against true labels.
    warnings : sequence of str
        Shown at the top of the page (a weak clustering, skipped images, ...).
    overview : PIL image, optional
        Dendrogram or cluster-size chart at the fitted K.
    """

    images: Sequence[ReportImage]
    k: int
    title: str = "Anomaly clustering"
    command: str = "fit"
    linkage: Optional[np.ndarray] = None
    k_max: Optional[int] = None
    distances: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None
    representatives: Optional[Sequence[int]] = None
    heat_range: Optional[Tuple[float, float]] = None
    heat_label: str = "patch anomaly score"
    cluster_names: Optional[Mapping[int, str]] = None
    cluster_notes: Optional[Mapping[int, str]] = None
    facts: Optional[Mapping[str, object]] = None
    metrics: Optional[Mapping[str, float]] = None
    warnings: Sequence[str] = field(default_factory=tuple)
    overview: Optional[object] = None


def _check_square(x: Optional[np.ndarray], n: int, name: str) -> None:
    if x is None:
        return
    a = np.asarray(x)
    if a.shape != (n, n) or not np.isfinite(a).all():
        raise ValueError(f"{name} must be a finite ({n}, {n}) matrix; got shape {a.shape}")


def _check_images(run: ReportRun) -> None:
    for it in run.images:
        if not isinstance(it, ReportImage):
            raise ValueError(f"images must hold ReportImage objects; got {type(it).__name__}")
        if not -1 <= it.cluster < run.k:
            raise ValueError(f"image {it.path!r} has cluster {it.cluster}, outside -1..{run.k - 1}")
        if it.cluster == -1 and not it.is_good:
            raise ValueError(f"image {it.path!r} has cluster -1 but is not in the good group (is_good)")
        if it.confidence is not None and not 0.0 <= float(it.confidence) <= 1.0:
            raise ValueError(f"image {it.path!r} has confidence {it.confidence}, outside [0, 1]")
        if it.heat is not None and np.asarray(it.heat).ndim != 2:
            raise ValueError(f"image {it.path!r}: heat must be an (h, w) grid; got shape {np.shape(it.heat)}")


def check_run(run: ReportRun) -> ReportRun:
    """Validate ``run`` once, naming what is wrong; returns it unchanged.

    Examples
    --------
    >>> check_run(ReportRun([ReportImage("a.png", 2, "data:,")], k=2))
    Traceback (most recent call last):
    ...
    ValueError: image 'a.png' has cluster 2, outside -1..1
    """
    if not isinstance(run, ReportRun):
        raise ValueError(f"run must be a ReportRun; got {type(run).__name__}")
    check_int(run.k, "k", low=1)
    if run.command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}; got {run.command!r}")
    _check_images(run)
    n = len(run.images)
    n_clustered = sum(1 for it in run.images if it.cluster >= 0)
    if run.linkage is not None and np.shape(run.linkage) != (n_clustered - 1, 4):
        raise ValueError(f"linkage must be ({n_clustered - 1}, 4) for the {n_clustered} clustered images; "
                         f"got {np.shape(run.linkage)}")
    if run.k_max is not None:
        check_int(run.k_max, "k_max", low=1)
    _check_square(run.distances, n, "distances")
    if run.embeddings is not None and (np.ndim(run.embeddings) != 2 or np.shape(run.embeddings)[0] != n):
        raise ValueError(f"embeddings must be an (N, D) array with N={n}; got shape {np.shape(run.embeddings)}")
    if run.representatives is not None and len(run.representatives) != run.k:
        raise ValueError(f"representatives must hold one image index per cluster ({run.k}); "
                         f"got {len(run.representatives)}")
    bad = [c for c in (run.cluster_notes or {}) if not (isinstance(c, int) and 0 <= c < run.k)]
    if bad:
        raise ValueError(f"cluster_notes must be keyed by fitted clusters 0..{run.k - 1}; got {bad!r}")
    if run.heat_range is not None:
        lo, hi = (float(v) for v in run.heat_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"heat_range must be two finite numbers lo < hi; got {run.heat_range!r}")
    return run

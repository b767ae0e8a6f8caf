"""summary.json of a clustering run: what was found, chosen and skipped, with parameters, timings and versions.

Built from the steps of :mod:`.cluster` (its ``Sources``, ``Features`` and
``Clustering``); :func:`k_text` says in words how K was chosen (also shown
on the terminal and in the report).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from ..clustering.auto_k import KChoice
from ..core.defaults import CONSENSUS_EXTRA_K, CONSENSUS_TAU_FACTORS
from ..estimator.clusterer import AnomalyClusterer
from ..features.folders import relative_name
from ..features.images import display_path
from .extraction import backbone_dict, problem_dicts

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Clustering, Features, Sources

__all__ = ["build_summary", "consensus_text", "k_text", "versions"]


def build_summary(
    args: argparse.Namespace,
    out: Path,
    sources: "Sources",
    features: "Features",
    clustering: "Clustering",
    timings: Dict[str, float],
) -> Dict[str, Any]:
    """The content of summary.json."""
    model, labels_true, folder = clustering.model, clustering.labels_true, sources.folder
    labels = model.labels_
    result, normal_result, cache = features.result, features.normal_result, features.cache
    return {
        "command": "cluster",
        "folder": display_path(folder),
        "out": display_path(out),
        "n_images": len(clustering.paths),
        "k": model.k_,
        "k_choice": model.k_choice_.to_dict(),
        "consensus": {"mode": model.consensus, "partitions": int(model.consensus_), "text": consensus_text(model)},
        "cluster_sizes": np.bincount(labels[labels >= 0], minlength=model.k_).tolist(),
        "metrics": clustering.metrics,
        "labels": None if labels_true is None else {
            "source": "first-level sub-folders", "counts": {c: labels_true.count(c) for c in sorted(set(labels_true))}},
        "new_type_threshold": model.new_type_threshold_,
        "good_group": {"on": model.good_group_, "threshold": model.good_threshold_,
                       "rate": model.good_rate, "n_good": int(model.is_good_.sum())},
        "confidence": {"mean": float(np.nanmean(model.confidence_)),
                       "cohesion": [float(v) for v in model.cohesion_]},
        "weak": model.weak_,
        "parameters": summary_parameters(args, sources, model),
        "skipped": {
            "other_files": sources.images.skipped_files,
            "excluded": [relative_name(p, folder) for p in sources.images.excluded],
            "problems": problem_dicts(sources.images.problems, folder),
            "unreadable_images": problem_dicts(result.failures, folder),
            "unreadable_normal_images": [] if normal_result is None else problem_dicts(
                normal_result.failures, sources.normal_folder),
        },
        "extraction": {"cache_hits": int(result.cache_hits), "computed": int(result.computed),
                       "cache_dir": None if cache is None else display_path(cache.root / "features"),
                       "timings": {key: float(v) for key, v in result.timings.items()}},
        "cache": {"dir": None if cache is None else display_path(cache.root), "steps": list(model.cached_steps_),
                  "writing": None if cache is None or cache.guard.failure is None else f"off: {cache.guard.failure}"},
        "backbone": backbone_dict(features.extractor),
        "extractor": features.extractor.describe(),
        "timings": {key: float(v) for key, v in timings.items()},
        "versions": versions(),
    }


def summary_parameters(args: argparse.Namespace, sources: "Sources", model: AnomalyClusterer) -> Dict[str, Any]:
    """The estimator's parameters and the command's own options, as summary.json records them."""
    params = model.get_params()
    params.update(effective_tau=model.effective_tau, projected_out=model.projection_.rank,
                  n_threads=model.n_threads, labels=args.labels,
                  export=args.export, exclude=list(args.exclude), default_exclude=not args.no_default_exclude,
                  normal=None if sources.normal_folder is None else display_path(sources.normal_folder))
    return params


def k_text(choice: KChoice) -> str:
    """How K was chosen, in words."""
    if choice.method == "l-method":
        return f"chosen by the L-method (corner of the merge-cost graph) among 3..{max(choice.scores)}"
    if choice.method == "fixed":
        return "given with --k"
    if choice.method == "identical-images":
        return "= 1: all images have identical features"
    if choice.method == "too-few-images":
        return "= 1: too few images"
    return f"({choice.method.replace('-', ' ')})"


def consensus_text(model: AnomalyClusterer) -> str:
    """How the clusters were cut, in words (empty for methods other than Ward)."""
    if model.consensus_:
        return (f" (consensus of {model.consensus_} partitions: the Ward trees at {_factors()} x tau, each cut at "
                f"K..K+{CONSENSUS_EXTRA_K})")
    if model.validate_params().consensus_possible:
        return " (one Ward tree at tau: --consensus off)"
    return ""


def _factors() -> str:
    return f"{min(CONSENSUS_TAU_FACTORS):g}-{max(CONSENSUS_TAU_FACTORS):g}"


def versions() -> Dict[str, Optional[str]]:
    """Versions of the package, Python and the libraries that shaped the results."""
    import PIL
    import scipy

    from .. import __version__

    ort_version: Optional[str]
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "anomclust_lite": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
        "onnxruntime": ort_version,
    }

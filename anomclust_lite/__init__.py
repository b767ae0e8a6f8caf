"""anomclust_lite: group images of defective parts into clusters of defect types.

Implements "Anomaly Clustering: Grouping Images into Coherent Clusters of
Anomaly Types" (Sohn et al., WACV 2023) with NumPy, SciPy and Pillow, plus
ONNX Runtime for feature extraction. Importing the package does no work:
every name below is imported from its layer on first use (PEP 562), so
``anomclust_lite.patch_scores`` loads the NumPy/SciPy core only, never
Pillow or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any, List

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # the pipeline: bags -> scores -> weights -> WA embeddings
    "embed_bags",
    "WeightedEmbedding",
    # scores and weights
    "AGGREGATES",
    "patch_scores",
    "cross_patch_scores",
    "normal_scores",
    "compact_bank",
    "coreset_indices",
    "topk_count",
    "PatchMatches",
    "nearest_patch_similarities",
    "scores_from_matches",
    "hausdorff_from_matches",
    "nested_subsets",
    "tiered_normal_scores",
    "soft_weights",
    "topk_weights",
    "mask_weights",
    "uniform_weights",
    "normalize_patches",
    "plan_tasks",
    # trust: image anomaly scores, calibrated thresholds, confidence, novelty
    "DEFAULT_IMAGE_TOPK",
    "DEFAULT_RATE",
    "image_scores",
    "calibrated_threshold",
    "WEAK_MEAN_CONFIDENCE",
    "centre_margins",
    "cluster_cohesion",
    "is_weak",
    "nearest_distances",
    "novelty_scores",
    "cluster_thresholds",
    "flag_new_types",
    # evaluation data sets (the paper's protocol)
    "EvalSet",
    "mvtec_category",
    "mtd",
    "shared_root",
    # bag distances
    "weighted_average",
    "wa_distances",
    "Projection",
    "nuisance_projection",
    "auto_rank",
    "projection_rank",
    "HAUSDORFF_INNER",
    "HAUSDORFF_OUTER",
    "hausdorff_distances",
    # fitted model and automatic K
    "AnomalyClusterer",
    "Assignment",
    "KChoice",
    "choose_k",
    "cut_linkage",
    "l_method",
    "merge_costs",
    "within_cluster_dispersion",
    "silhouette_score",
    # clustering
    "METHODS",
    "HIERARCHICAL_METHODS",
    "ClusteringWarning",
    "cluster",
    "linkage_matrix",
    "mds_embedding",
    # metrics
    "metrics",
    "contingency_matrix",
    "nmi",
    "ari",
    "accuracy",
    "f1_macro",
    "purity",
    "clustering_report",
    "purity_curve",
    "purity_auc",
    "reduction_at_purity",
    # images and feature extraction
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "ImageListing",
    "ImageProblem",
    "find_images",
    "load_image",
    "preprocess",
    "resize_and_crop",
    "display_path",
    "Extractor",
    "ExtractionResult",
    "avg_pool3x3",
    "FeatureCache",
    "CacheFolder",
    "ModelNotFoundError",
    "resolve_model",
    # WRN-50 layer-2 model, built without torch
    "UnsafeCheckpointError",
    "load_state_dict",
    "ChecksumError",
    "DownloadError",
    "user_cache_dir",
    "verify_checkpoint",
    "download_checkpoint",
    "build_wrn50_layer2_onnx",
    "export_wrn50_onnx",
    "build_wrn50_backbone",
    "random_wrn50_state_dict",
    # the embedded default backbone (maintainers: tools/build_embedded_backbone.py)
    "write_embedded_backbone",
]


#: Public name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "DEFAULT_IMAGE_TOPK": ".core.anomaly",
    "DEFAULT_RATE": ".core.anomaly",
    "image_scores": ".core.anomaly",
    "calibrated_threshold": ".core.anomaly",
    "WEAK_MEAN_CONFIDENCE": ".core.confidence",
    "centre_margins": ".core.confidence",
    "cluster_cohesion": ".core.confidence",
    "is_weak": ".core.confidence",
    "nearest_distances": ".core.novelty",
    "novelty_scores": ".core.novelty",
    "cluster_thresholds": ".core.novelty",
    "flag_new_types": ".core.novelty",
    "embed_bags": ".core.pipeline",
    "WeightedEmbedding": ".core.pipeline",
    "AGGREGATES": ".core.scores",
    "patch_scores": ".core.scores",
    "cross_patch_scores": ".core.scores",
    "normal_scores": ".core.scores",
    "compact_bank": ".core.coreset",
    "coreset_indices": ".core.coreset",
    "topk_count": ".core.scores",
    "PatchMatches": ".core.sweeps",
    "nearest_patch_similarities": ".core.sweeps",
    "scores_from_matches": ".core.sweeps",
    "hausdorff_from_matches": ".core.sweeps",
    "nested_subsets": ".core.sweeps",
    "tiered_normal_scores": ".core.sweeps",
    "soft_weights": ".core.weights",
    "topk_weights": ".core.weights",
    "mask_weights": ".core.weights",
    "uniform_weights": ".core.weights",
    "normalize_patches": ".core.normalize",
    "plan_tasks": ".core.kernel",
    "EvalSet": ".datasets",
    "mvtec_category": ".datasets",
    "mtd": ".datasets",
    "shared_root": ".datasets",
    "weighted_average": ".core.distances",
    "wa_distances": ".core.distances",
    "Projection": ".core.projection",
    "nuisance_projection": ".core.projection",
    "auto_rank": ".core.projection",
    "projection_rank": ".core.projection",
    "HAUSDORFF_INNER": ".core.hausdorff",
    "HAUSDORFF_OUTER": ".core.hausdorff",
    "hausdorff_distances": ".core.hausdorff",
    "AnomalyClusterer": ".estimator.clusterer",
    "Assignment": ".estimator.assign",
    "KChoice": ".clustering.auto_k",
    "choose_k": ".clustering.auto_k",
    "cut_linkage": ".clustering.auto_k",
    "l_method": ".clustering.auto_k",
    "merge_costs": ".clustering.auto_k",
    "within_cluster_dispersion": ".clustering.auto_k",
    "silhouette_score": ".clustering.auto_k",
    "METHODS": ".clustering.dispatch",
    "HIERARCHICAL_METHODS": ".clustering.dispatch",
    "ClusteringWarning": ".clustering.dispatch",
    "cluster": ".clustering.dispatch",
    "linkage_matrix": ".clustering.dispatch",
    "mds_embedding": ".clustering.dispatch",
    "metrics": ".metrics",
    "contingency_matrix": ".metrics",
    "nmi": ".metrics",
    "ari": ".metrics",
    "accuracy": ".metrics",
    "f1_macro": ".metrics",
    "purity": ".metrics",
    "clustering_report": ".metrics",
    "purity_curve": ".metrics",
    "purity_auc": ".metrics",
    "reduction_at_purity": ".metrics",
    "IMAGE_EXTENSIONS": ".features.listing",
    "DEFAULT_MAX_PIXELS": ".features.images",
    "ImageLoadError": ".features.images",
    "ImageListing": ".features.listing",
    "ImageProblem": ".features.images",
    "find_images": ".features.listing",
    "load_image": ".features.images",
    "preprocess": ".features.preprocess",
    "resize_and_crop": ".features.preprocess",
    "display_path": ".features.images",
    "Extractor": ".features.extractor",
    "ExtractionResult": ".features.pipeline",
    "avg_pool3x3": ".features.postprocess",
    "FeatureCache": ".features.cache",
    "CacheFolder": ".files.cache_folder",
    "ModelNotFoundError": ".features.models",
    "resolve_model": ".features.models",
    "UnsafeCheckpointError": ".backbones.torch_checkpoint",
    "load_state_dict": ".backbones.torch_checkpoint",
    "ChecksumError": ".backbones.wrn50",
    "DownloadError": ".backbones.wrn50",
    "user_cache_dir": ".files.user_cache",
    "verify_checkpoint": ".backbones.wrn50",
    "download_checkpoint": ".backbones.wrn50",
    "build_wrn50_layer2_onnx": ".backbones.wrn50",
    "export_wrn50_onnx": ".backbones.wrn50",
    "build_wrn50_backbone": ".backbones.wrn50",
    "random_wrn50_state_dict": ".backbones.wrn50",
    "write_embedded_backbone": ".backbones.embedded",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == f".{name}":  # a subpackage exported as such (anomclust_lite.metrics)
        value = importlib.import_module(module, __name__)
    else:
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


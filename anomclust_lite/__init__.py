"""anomclust_lite: group images of defective parts into clusters of defect types.

Implements "Anomaly Clustering: Grouping Images into Coherent Clusters of
Anomaly Types" (Sohn et al., WACV 2023) with NumPy, SciPy and Pillow, plus
ONNX Runtime for feature extraction. Importing the package does no work.
"""

from __future__ import annotations

from .cluster.auto_k import KChoice, choose_k, l_method, merge_costs, silhouette_score, within_cluster_dispersion
from .estimator.assign import Assignment
from .estimator.clusterer import AnomalyClusterer
from .cluster.dispatch import (
    HIERARCHICAL_METHODS,
    METHODS,
    ClusteringWarning,
    cluster,
    linkage_matrix,
    mds_embedding,
)
from .datasets import EvalSet, mtd, mvtec_category
from .core.distances import wa_distances, weighted_average
from . import metrics
from .features.extractor import Extractor
from .features.pipeline import ExtractionResult
from .features.postprocess import avg_pool3x3
from .features.cache import FeatureCache
from .core.hausdorff import HAUSDORFF_INNER, HAUSDORFF_OUTER, hausdorff_distances
from .features.images import DEFAULT_MAX_PIXELS, ImageLoadError, ImageProblem, display_path, load_image
from .features.listing import IMAGE_EXTENSIONS, ImageListing, find_images
from .features.preprocess import preprocess, resize_and_crop
from .metrics import (
    accuracy,
    ari,
    clustering_report,
    contingency_matrix,
    f1_macro,
    nmi,
    purity,
    purity_auc,
    purity_curve,
    reduction_at_purity,
)
from .features.models import ModelNotFoundError, resolve_model
from .core.normalize import normalize_patches
from .core.pipeline import WeightedEmbedding, embed_bags
from .core.scores import AGGREGATES, cross_patch_scores, normal_scores, patch_scores, topk_count
from .core.sweeps import (
    PatchMatches,
    hausdorff_from_matches,
    nearest_patch_similarities,
    nested_subsets,
    scores_from_matches,
    tiered_normal_scores,
)
from .backbones.torch_checkpoint import UnsafeCheckpointError, load_state_dict
from .core.weights import mask_weights, soft_weights, topk_weights, uniform_weights
from .backbones.wrn50 import (
    ChecksumError,
    DownloadError,
    build_wrn50_layer2_onnx,
    download_checkpoint,
    export_wrn50_onnx,
    random_wrn50_state_dict,
    verify_checkpoint,
)
from .files.user_cache import user_cache_dir

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
    # evaluation data sets (the paper's protocol)
    "EvalSet",
    "mvtec_category",
    "mtd",
    # bag distances
    "weighted_average",
    "wa_distances",
    "HAUSDORFF_INNER",
    "HAUSDORFF_OUTER",
    "hausdorff_distances",
    # fitted model and automatic K
    "AnomalyClusterer",
    "Assignment",
    "KChoice",
    "choose_k",
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
    "random_wrn50_state_dict",
]

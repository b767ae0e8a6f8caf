"""Clustering quality metrics against ground-truth labels.

All metrics compare a ground-truth labelling ``labels_true`` (defect type
per image) with a predicted clustering ``labels_pred``.  Labels may be any
hashable values (ints, strings, ...); only equality matters.  Everything is
computed from the contingency table ``C[i, j]`` = number of samples of
class ``i`` put in cluster ``j``, and every metric returns a Python
``float``.

Single-number metrics
    :func:`nmi`, :func:`ari`, :func:`accuracy`, :func:`f1_macro`,
    :func:`purity`, and :func:`clustering_report` for all of them at once.

Purity curves (Sohn et al., "Anomaly Clustering", WACV 2023)
    :func:`purity_curve` gives purity as a function of the number of
    clusters ``K`` (from a hierarchical linkage or from one labelling per
    ``K``); :func:`purity_auc` summarises it as the mean purity (mAUC) and
    :func:`reduction_at_purity` as the reduction ratio R@P.
"""

from .contingency import contingency_matrix
from .purity_curves import purity_auc, purity_curve, reduction_at_purity
from .supervised import accuracy, ari, clustering_report, f1_macro, nmi, purity

__all__ = [
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
]

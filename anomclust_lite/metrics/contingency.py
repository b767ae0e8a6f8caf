"""The contingency table of two labellings, from which every metric is computed.

``C[i, j]`` = number of samples of class ``i`` put in cluster ``j``. Labels
may be any hashable values (ints, strings, ...); only equality matters.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from ..core.validation import check_labels

__all__ = ["ContingencyTable", "check_label_pair", "contingency_matrix", "contingency_table", "encode_labels"]


def check_label_pair(labels_true: object, labels_pred: object) -> Tuple[np.ndarray, np.ndarray]:
    """Validate two labellings: 1-D, non-empty, equal length."""
    y_true = check_labels(labels_true, "labels_true")
    y_pred = check_labels(labels_pred, "labels_pred")
    if y_true.shape[0] < 1:
        raise ValueError("labels_true must hold at least one label; got an empty array")
    if y_pred.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"labels_pred must have the same length as labels_true; got {y_pred.shape[0]} "
            f"and {y_true.shape[0]} labels. Pass one predicted label per sample"
        )
    return y_true, y_pred


def encode_labels(labels: np.ndarray) -> Tuple[np.ndarray, int]:
    """Map labels to codes ``0..n_unique-1``.

    Codes follow the sorted order of the labels when they can be sorted
    (as ``np.unique`` does) and the order of first appearance otherwise
    (e.g. an object array mixing ``None`` and ints).
    """
    try:
        uniques, codes = np.unique(labels, return_inverse=True)
        return codes.reshape(-1).astype(np.int64, copy=False), int(uniques.shape[0])
    except TypeError:
        index: Dict[object, int] = {}
        codes = np.fromiter(
            (index.setdefault(v, len(index)) for v in labels.tolist()), dtype=np.int64, count=labels.shape[0]
        )
        return codes, len(index)


class ContingencyTable:
    """Sparse contingency table of two encoded labellings.

    Attributes: ``rows``/``cols``/``counts`` of the non-zero cells,
    ``class_sizes`` (n_classes,), ``cluster_sizes`` (n_clusters,), ``n``.
    """

    def __init__(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        true_codes, self.n_classes = encode_labels(y_true)
        pred_codes, self.n_clusters = encode_labels(y_pred)
        self.n = int(true_codes.shape[0])
        cells, counts = np.unique(true_codes * self.n_clusters + pred_codes, return_counts=True)
        self.rows = cells // self.n_clusters
        self.cols = cells % self.n_clusters
        self.counts = counts.astype(np.int64, copy=False)
        self.class_sizes = np.bincount(true_codes, minlength=self.n_classes).astype(np.int64)
        self.cluster_sizes = np.bincount(pred_codes, minlength=self.n_clusters).astype(np.int64)

    def dense(self) -> np.ndarray:
        """Dense ``(n_classes, n_clusters)`` int64 table."""
        table = np.zeros((self.n_classes, self.n_clusters), dtype=np.int64)
        table[self.rows, self.cols] = self.counts
        return table

    def same_partition(self) -> bool:
        """True when both labellings are equal up to renaming the labels."""
        return self.counts.shape[0] == self.n_classes == self.n_clusters


def contingency_table(labels_true: object, labels_pred: object) -> ContingencyTable:
    y_true, y_pred = check_label_pair(labels_true, labels_pred)
    return ContingencyTable(y_true, y_pred)




def contingency_matrix(labels_true: object, labels_pred: object) -> np.ndarray:
    """Count samples per (true class, predicted cluster) pair.

    Parameters
    ----------
    labels_true : array_like, shape (N,)
        Ground-truth class of each sample (any hashable values).
    labels_pred : array_like, shape (N,)
        Predicted cluster of each sample (any hashable values).

    Returns
    -------
    numpy.ndarray, shape (n_classes, n_clusters), int64
        ``C[i, j]`` = number of samples of class ``i`` in cluster ``j``.
        Rows and columns follow the sorted unique labels (order of first
        appearance when the labels cannot be sorted).

    Raises
    ------
    ValueError
        If a labelling is not 1-D, is empty, or the lengths differ.

    Notes
    -----
    Memory is ``O(n_classes * n_clusters)``.

    Examples
    --------
    >>> contingency_matrix(["a", "a", "b"], [1, 0, 0])
    array([[1, 1],
           [1, 0]])
    """
    return contingency_table(labels_true, labels_pred).dense()

"""Naive loop implementations of the paper's formulas, used as test oracles."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def pair_min_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(Mx,) distance of each patch of x to its nearest patch of y, float64."""
    return cdist(x.astype(np.float64), y.astype(np.float64)).min(axis=1)


def naive_patch_scores(bags, aggregate="mean", q=0.1, reference=None):
    n, m, _ = bags.shape
    ref = list(range(n)) if reference is None else sorted(reference)
    out = np.zeros((n, m))
    k = max(1, int(np.floor(q * (len(ref) - 1) + 1e-9)))
    for i in range(n):
        per_j = np.stack([pair_min_dists(bags[i], bags[j]) for j in ref if j != i], axis=1)
        if aggregate == "mean":
            out[i] = per_j.mean(axis=1)
        elif aggregate == "max":
            out[i] = per_j.max(axis=1)
        elif aggregate == "min":
            out[i] = per_j.min(axis=1)
        else:
            out[i] = np.sort(per_j, axis=1)[:, :min(k, per_j.shape[1])].mean(axis=1)
    return out


def naive_normal_scores(bags, normal_bags):
    bank = normal_bags.reshape(-1, normal_bags.shape[2])
    return np.stack([pair_min_dists(b, bank) for b in bags])


def naive_hausdorff(bags, inner="max-min", outer="max"):
    n = bags.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = cdist(bags[i].astype(np.float64), bags[j].astype(np.float64))
            if inner == "max-min":
                h1, h2 = d.min(axis=1).max(), d.min(axis=0).max()
            elif inner == "mean-min":
                h1, h2 = d.min(axis=1).mean(), d.min(axis=0).mean()
            elif inner == "min-min":
                h1 = h2 = d.min()
            else:
                h1 = h2 = d.mean()
            if inner in ("max-min", "mean-min"):
                out[i, j] = max(h1, h2) if outer == "max" else 0.5 * (h1 + h2)
            else:
                out[i, j] = h1
    return out


def naive_wa_distances(bags, weights):
    emb = np.stack([(w[:, None] * b.astype(np.float64)).sum(axis=0) for b, w in zip(bags, weights)])
    return cdist(emb, emb)

"""Gaussian mixture with full covariances fitted by EM, initialised by k-means.

Private module: :func:`anomclust_lite.clustering.dispatch.cluster` validates its inputs and
calls :func:`gaussian_mixture`; the helpers here trust theirs.

Everything is float64; responsibilities use a max-subtracted log-sum-exp.  Each
covariance gets ``reg_covar`` added to its diagonal, so a component on duplicate
points (zero empirical covariance) stays positive definite.

When there are more dimensions than points (``D > N``) the centred data are first
rotated onto their ``N``-dimensional span (thin SVD).  This is exact, not an
approximation: every ``x_n − μ_j`` lies in that span, so in the ``D − N`` orthogonal
directions every covariance is ``reg_covar · I`` and contributes the same constant to
every component's log-density.  Responsibilities are unchanged; the constant is added
back to the reported log-likelihood.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

from .kmeans import kmeans

__all__ = ["GaussianMixtureResult", "component_log_densities", "gaussian_mixture"]

logger = logging.getLogger(__name__)

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixtureResult(NamedTuple):
    """Outcome of :func:`gaussian_mixture`.

    Attributes
    ----------
    labels : np.ndarray
        ``(N,)`` int64 most responsible component of each point (some may be unused).
    weights : np.ndarray
        ``(k,)`` float64 mixing weights.
    log_likelihood : float
        Mean log-likelihood per point, ``(1/N) Σ_n log Σ_j π_j N(x_n | μ_j, Σ_j)``, in the
        original ``D`` dimensions.
    n_iter : int
        EM iterations run by the initialisation that won.
    converged : bool
        Whether that run met the tolerance.
    """

    labels: np.ndarray
    weights: np.ndarray
    log_likelihood: float
    n_iter: int
    converged: bool


def component_log_densities(x: np.ndarray, means: np.ndarray, cholesky_factors: np.ndarray) -> np.ndarray:
    """Log-densities ``log N(x_n | μ_j, L_j L_jᵀ)`` of every point under every component.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` float64 points.
    means : np.ndarray
        ``(k, D)`` float64 component means.
    cholesky_factors : np.ndarray
        ``(k, D, D)`` lower-triangular Cholesky factors of the covariances.

    Returns
    -------
    np.ndarray
        ``(N, k)`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> out = component_log_densities(np.zeros((1, 2)), np.zeros((1, 2)), np.eye(2)[None])
    >>> bool(np.isclose(out[0, 0], -np.log(2 * np.pi)))
    True
    """
    n, d = x.shape
    k = means.shape[0]
    out = np.empty((n, k))
    for j in range(k):
        chol = cholesky_factors[j]
        whitened = solve_triangular(chol, (x - means[j]).T, lower=True, check_finite=False)
        mahalanobis = np.einsum("dn,dn->n", whitened, whitened)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, j] = -0.5 * (d * _LOG_2PI + log_det + mahalanobis)
    return out


def _m_step(
    x: np.ndarray, resp: np.ndarray, reg_covar: float
) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
    """Weights, means and covariance Cholesky factors from responsibilities ``(N, k)``."""
    n, d = x.shape
    k = resp.shape[1]
    counts = resp.sum(axis=0) + 10.0 * np.finfo(np.float64).eps
    weights = counts / n
    means = (resp.T @ x) / counts[:, None]
    chol = np.empty((k, d, d))
    for j in range(k):
        diff = x - means[j]
        cov = (resp[:, j, None] * diff).T @ diff / counts[j]
        cov.flat[:: d + 1] += reg_covar
        try:
            chol[j] = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                f"x: the covariance of mixture component {j} is not positive definite even "
                f"with reg_covar={reg_covar:g} on its diagonal; the embeddings' scale is "
                "probably very large — rescale x (e.g. L2-normalise the embeddings)"
            ) from exc
    return weights, means, chol


def _fit_from_labels(
    x: np.ndarray, labels: np.ndarray, k: int, max_iter: int, tol: float, reg_covar: float
) -> "tuple[np.ndarray, np.ndarray, float, int, bool]":
    """EM from a hard initial assignment; returns labels, weights, mean log-lik, iters, converged."""
    resp = np.zeros((x.shape[0], k))
    resp[np.arange(x.shape[0]), labels] = 1.0
    previous = -np.inf
    converged = False
    n_iter = 0
    weights, means, chol = _m_step(x, resp, reg_covar)
    while True:
        weighted = component_log_densities(x, means, chol) + np.log(weights)[None, :]
        log_norm = logsumexp(weighted, axis=1)
        mean_log_lik = float(log_norm.mean())
        if abs(mean_log_lik - previous) < tol:
            converged = True
            break
        if n_iter == max_iter:
            break
        previous = mean_log_lik
        resp = np.exp(weighted - log_norm[:, None])
        weights, means, chol = _m_step(x, resp, reg_covar)
        n_iter += 1
    return np.argmax(weighted, axis=1).astype(np.int64), weights, mean_log_lik, n_iter, converged


def gaussian_mixture(
    x: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    n_init: int = 3,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
) -> GaussianMixtureResult:
    """Fit a full-covariance Gaussian mixture by EM; best of ``n_init`` initialisations.

    Each initialisation runs one k-means++/Lloyd pass (:func:`anomclust_lite.clustering.kmeans.kmeans`
    with ``n_init=1``) and starts EM from its hard assignment.  EM stops when the mean
    log-likelihood per point changes by less than ``tol`` or after ``max_iter`` M-steps.
    The initialisation with the highest final log-likelihood wins (the first on ties).
    Labels are the most responsible component under the final parameters.

    Parameters
    ----------
    x : np.ndarray
        ``(N, D)`` float64 points.
    k : int
        Number of components, ``1 <= k <= N``.
    rng : np.random.Generator
        Source of all randomness.
    n_init : int
        Number of initialisations.
    max_iter : int
        Maximum EM iterations per initialisation.
    tol : float
        Convergence threshold on the change of the mean log-likelihood.
    reg_covar : float
        Added to every covariance diagonal.

    Returns
    -------
    GaussianMixtureResult

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(20, 1, (20, 2))])
    >>> res = gaussian_mixture(x, 2, np.random.default_rng(0))
    >>> len(set(res.labels[:20])), len(set(res.labels[20:])), bool(res.labels[0] != res.labels[-1])
    (1, 1, True)
    """
    n, d = x.shape
    dropped_dims = 0
    if d > n:
        centred = x - x.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        x = u * s
        dropped_dims = d - n
    # log-density of the dropped directions: N(0 | 0, reg_covar) per direction, all components.
    constant = -0.5 * dropped_dims * (_LOG_2PI + math.log(reg_covar))
    runs = []
    for run in range(n_init):
        init_labels = kmeans(x, k, rng, n_init=1).labels
        labels, weights, log_lik, n_iter, converged = _fit_from_labels(
            x, init_labels, k, max_iter, tol, reg_covar
        )
        if not converged:
            logger.warning("GMM initialisation %d did not converge in %d EM iterations", run, max_iter)
        logger.debug("GMM initialisation %d: %d iterations, mean log-likelihood %.6g", run, n_iter, log_lik)
        runs.append(GaussianMixtureResult(labels, weights, log_lik + constant, n_iter, converged))
    return max(runs, key=lambda r: r.log_likelihood)  # first of the best on ties

"""Randomly initialised ``wide_resnet50_2`` weights up to ``layer2``, for tests and benchmarks."""

from __future__ import annotations

from typing import Dict

import numpy as np

from ...core.validation import check_int
from .architecture import wrn50_layer2_shapes

__all__ = ["random_wrn50_state_dict"]


def random_wrn50_state_dict(seed: int = 0) -> Dict[str, np.ndarray]:
    """Randomly initialised ``wide_resnet50_2`` weights up to ``layer2``.

    Convolutions use He-normal initialisation; every BatchNorm gets
    non-trivial statistics (``running_mean`` ~ N(0, 0.2²),
    ``running_var`` ~ U(0.5, 2), ``weight`` ~ U(0.5, 1.5), ``bias`` ~
    N(0, 0.1²); the last BatchNorm of each residual branch is scaled down
    so activations stay O(1) through the blocks).

    Parameters
    ----------
    seed : int
        Seed for ``numpy.random.default_rng``; equal seeds give equal weights.

    Returns
    -------
    dict of str -> numpy.ndarray
        Names and shapes of
        :func:`~anomclust_lite.backbones.wrn50.architecture.wrn50_layer2_shapes`;
        float32 tensors and int64 scalar ``num_batches_tracked``.

    Examples
    --------
    >>> sd = random_wrn50_state_dict(seed=1)
    >>> sd["bn1.running_var"].shape, sd["bn1.num_batches_tracked"].dtype
    ((64,), dtype('int64'))
    """
    seed = check_int(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for key, shape in wrn50_layer2_shapes().items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif key.endswith(".num_batches_tracked"):
            out[key] = np.array(rng.integers(1, 1_000_000), dtype=np.int64)
            continue
        elif key.endswith(".running_mean"):
            arr = rng.normal(0.0, 0.2, shape)
        elif key.endswith(".running_var"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif key.endswith(".bias"):
            arr = rng.normal(0.0, 0.1, shape)
        else:  # BatchNorm weight
            arr = rng.uniform(0.5, 1.5, shape)
            if ".bn3." in key:
                arr *= 0.3
        out[key] = arr.astype(np.float32)
    return out

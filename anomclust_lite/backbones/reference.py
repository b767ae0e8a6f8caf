"""NumPy reference layers (float64) for checking the ONNX backbones.

Independent of the ONNX path: convolutions are im2col + matrix product,
BatchNorm is applied from its statistics (never folded), pooling uses
sliding windows. Slow; meant for tests on small inputs.

Examples
--------
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> conv2d(x, np.ones((1, 1, 2, 2)), stride=2, pad=0)[0, 0].tolist()
[[10.0, 18.0], [42.0, 50.0]]
>>> pool2d(x, 3, stride=2, pad=1, mode="max")[0, 0].tolist()
[[5.0, 7.0], [13.0, 15.0]]
"""

from __future__ import annotations

import numpy as np

from .graph import BN_EPS

__all__ = ["conv2d", "batchnorm", "pool2d", "relu"]


def conv2d(x: np.ndarray, w: np.ndarray, *, stride: int, pad: int) -> np.ndarray:
    """Convolution, no bias: x (N, C, H, W), w (O, C, k, k) -> (N, O, Ho, Wo), zero padding."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :ho, :wo]  # (N, C, Ho, Wo, kh, kw)
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    out = cols @ np.asarray(w, np.float64).reshape(o, c * kh * kw).T
    return out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def batchnorm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = BN_EPS
) -> np.ndarray:
    """Inference BatchNorm over axis 1: ``(x - mean) / sqrt(var + eps) * gamma + beta``."""

    def per_channel(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, np.float64)[None, :, None, None]

    return (x - per_channel(mean)) / np.sqrt(per_channel(var) + eps) * per_channel(gamma) + per_channel(beta)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def pool2d(x: np.ndarray, kernel: int, *, stride: int, pad: int, mode: str) -> np.ndarray:
    """Max pooling (padding never wins) or average pooling (zero padding counted in the mean)."""
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg'; got {mode!r}")
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(-2, -1)) if mode == "max" else windows.mean(axis=(-2, -1))

"""Shared pytest fixtures: the real data in ``../shared`` and small synthetic bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def blas_threads() -> "list[int]":
    """Thread count of every BLAS library threadpoolctl sees (empty when it sees none)."""
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    from anomclust_lite import shared_root

    root = shared_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"real data not found at {root} (set ANOMCLUST_SHARED)")
    return root


@pytest.fixture(scope="session")
def shared_model(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "resnet18_l2l3_int8.onnx"
    if not path.is_file():
        pytest.skip(f"shared model not found at {path}")
    pytest.importorskip("onnxruntime")
    return path


def make_bags(rng: np.random.Generator, n: int, m: int, d: int, dtype=np.float32) -> np.ndarray:
    """Random unit-norm bags of shape (n, m, d)."""
    x = rng.standard_normal((n, m, d))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.astype(dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)

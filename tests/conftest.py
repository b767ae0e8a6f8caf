"""Shared pytest fixtures: the real data in ``../shared`` and small synthetic bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomclust_lite import normalize_patches

REPO_ROOT = Path(__file__).resolve().parent.parent


def blas_threads() -> "list[int]":
    """Thread count of every BLAS library threadpoolctl sees (empty when it sees none)."""
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The user cache (the runs' shared cache folder, built backbones) in a folder of this test session.

    The CLI caches features, scores and embeddings in the user cache by
    default: tests must neither fill the real one nor hit entries of earlier
    sessions. Entries are keyed by content, so sharing them between the tests
    of one session cannot change a result; tests about cold and warm runs
    pass their own ``--cache-dir``.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANOMCLUST_CACHE", str(tmp_path_factory.mktemp("user_cache")))
        yield


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


def defect_bags(
    rng: np.random.Generator, sizes: "tuple[int, ...]", *, defect_dims: "tuple[int, ...] | None" = None,
    normal: int = 0, m: int = 16, d: int = 24,
) -> "tuple[np.ndarray, np.ndarray]":
    """``normal`` defect-free images, then images of normal texture with 3 patches of a type-specific defect.

    Normal texture mixes 4 shared prototypes; type ``t`` has its defect along axis ``defect_dims[t]``
    (default ``d - 1 - t``). Returns unit-norm bags (N, m, d) float32 and the types (-1 for normal images).
    """
    dims = defect_dims if defect_dims is not None else tuple(d - 1 - t for t in range(len(sizes)))
    protos = np.eye(d)[:4]
    bags, types = [], []
    for t, n in [(-1, normal)] + list(enumerate(sizes)):
        for _ in range(n):
            x = protos[rng.integers(0, 4, m)] + rng.normal(scale=0.15, size=(m, d))
            if t >= 0:
                where = rng.choice(m, 3, replace=False)
                x[where] = rng.normal(scale=0.15, size=(3, d))
                x[where, dims[t]] += 1.0
            bags.append(x)
            types.append(t)
    return normalize_patches(np.asarray(bags)).astype(np.float32), np.asarray(types)

"""model.npz: a fitted model as plain arrays and a JSON header (no pickle), written atomically.

Arrays: ``header`` (UTF-8 JSON as uint8), ``centers`` (K, D) float64,
``labels`` (N,) int64, ``fitted_distances`` (N,) float64, ``fitted_hashes``
(N, 16) uint8 and ``reference`` (R, M, D) float16 (see
:mod:`anomclust_lite.estimator.reference`). The header holds the format and
its version, the package version, the estimator's parameters, K and how it
was chosen, the new-type threshold (null: per cluster), the good-group threshold (null
without normal images) and whether the good group was set apart, the
reference kind, the patch count and the caller's metadata. Version 2 adds
``anomaly_scores`` (N,), ``novelty_embeddings`` (N, D) float32,
``novelty_scales`` (2,), ``novelty_thresholds`` (K,), ``novelty_fitted`` (N,)
and, for semi-supervised models, ``novelty_reference`` (R, M', D) float16, whole bags or rows of
a patch coreset (unsupervised models use ``reference``); labels may be -1 (the good group). Version 3 adds
``projection_mean`` (D,) and ``projection_components`` (r, D) float64 (the nuisance projection,
:mod:`anomclust_lite.core.projection`); a version 2 file is read as ``project_out=0``, which is
what it was fitted with. Version 4 changes no array: its default semi-supervised temperature is
relative (``tau=None`` means ``"0.4x"``); a version 2 or 3 semi-supervised file with ``tau=None``
was fitted with the absolute 0.04 and is read as ``tau=0.04``. Version 5 changes no array: its
parameters include ``consensus`` (consensus Ward); older files were fitted without it and are read
as ``consensus="off"``. Reading treats the file as hostile:
every array's shape, type and range is checked before anything is used.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Union

import numpy as np

from ..clustering.auto_k import KChoice
from ..files.atomic import atomic_save_npz
from ..files.npz import NpzRefused, read_npz_checked
from .assign import FittedState
from ..core.projection import Projection, identity_projection, projection_rank
from .trust import NoveltyState
from .reference import HASH_BYTES, REFERENCE_KINDS

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "CORRUPT", "SavedModel", "write_model", "read_model"]

#: ``format`` entry of a saved model's JSON header.
MODEL_FORMAT = "anomclust_lite.AnomalyClusterer"
#: Version of the saved-model layout; :func:`read_model` refuses others.
MODEL_FORMAT_VERSION = 5
#: Older layouts still read (see the module docstring).
_READABLE_VERSIONS = (2, 3, 4, 5)
#: The default semi-supervised temperature of format 2 and 3 files (absolute).
_OLD_TAU_SEMI = 0.04
#: Start of every message about a damaged or foreign model file.
CORRUPT = "model.npz is corrupt or from an incompatible version"

PathLike = Union[str, "os.PathLike[str]"]

_ARRAYS = ("header", "centers", "labels", "fitted_distances", "fitted_hashes", "reference", "anomaly_scores",
           "novelty_embeddings", "novelty_scales", "novelty_thresholds", "novelty_fitted", "novelty_reference")
#: Arrays added by version 3.
_ARRAYS_V3 = ("projection_mean", "projection_components")
_DTYPES = {
    "header": np.uint8, "centers": np.float64, "labels": np.int64, "fitted_distances": np.float64,
    "fitted_hashes": np.uint8, "reference": np.float16, "anomaly_scores": np.float64,
    "novelty_embeddings": np.float32, "novelty_scales": np.float64, "novelty_thresholds": np.float64,
    "novelty_fitted": np.float64, "novelty_reference": np.float16,
    "projection_mean": np.float64, "projection_components": np.float64,
}
#: Largest model.npz read, and largest total of its members once decompressed (4 GiB).
MAX_MODEL_BYTES = 4 << 30
#: Largest patch count a model may declare (a 1024 x 1024 feature map).
MAX_N_PATCHES = 1 << 20


@dataclass(frozen=True)
class SavedModel:
    """The content of a model.npz (``params`` as stored: the reader validates them)."""

    params: Dict[str, Any]
    state: FittedState
    k: int
    choice: KChoice
    n_patches: int
    metadata: Dict[str, Any]


def write_model(path: PathLike, model: SavedModel) -> None:
    """Write ``model`` to ``path`` atomically.

    Raises ``ValueError`` when the parameters or metadata are not
    JSON-serialisable (finite numbers, str keys).
    """
    from .. import __version__

    header = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "anomclust_lite_version": __version__,
        "params": model.params,
        "k": model.k,
        "k_choice": model.choice.to_dict(),
        "new_type_threshold": model.state.threshold,
        "good_threshold": model.state.good_threshold,
        "good_group": model.state.good_group,
        "reference_kind": model.state.reference_kind,
        "n_patches": model.n_patches,
        "metadata": model.metadata,
    }
    try:
        text = json.dumps(header, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable (finite numbers, str keys): {exc}") from None
    state = model.state
    atomic_save_npz(
        path,
        header=np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
        centers=state.centers.astype(np.float64),
        labels=state.labels.astype(np.int64),
        fitted_distances=state.wa_distances.astype(np.float64),
        fitted_hashes=state.hashes,
        reference=state.reference,
        anomaly_scores=state.anomaly_scores.astype(np.float64),
        novelty_embeddings=state.novelty.embeddings.astype(np.float32),
        novelty_scales=state.novelty.scales.astype(np.float64),
        novelty_thresholds=state.novelty.thresholds.astype(np.float64),
        novelty_fitted=state.novelty.fitted.astype(np.float64),
        # unsupervised models score and measure novelty against the same images: stored once
        novelty_reference=(state.novelty.reference if state.reference_kind != "images"
                           else np.zeros((0,) + state.reference.shape[1:], dtype=np.float16)),
        projection_mean=state.projection.mean.astype(np.float64),
        projection_components=state.projection.components.astype(np.float64),
    )


def read_model(path: PathLike) -> SavedModel:
    """Read and check a model.npz written by :func:`write_model`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a model of this format version, or is damaged
        ("model.npz is corrupt or from an incompatible version: ...").
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {os.fspath(path)!r} does not exist; pass the model.npz written by a clustering run")
    try:
        arrays = read_npz_checked(path, _DTYPES, max_bytes=MAX_MODEL_BYTES, optional=_ARRAYS_V3)
    except NpzRefused as exc:
        raise ValueError(f"{CORRUPT}: {exc}") from None
    except Exception as exc:  # zipfile, zlib, the .npy parser, MemoryError: a damaged file raises any of them
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{CORRUPT}: cannot read it as an .npz file ({type(exc).__name__}: {reason})") from None
    return _from_arrays(arrays)


def _read_header(arrays: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    from .. import __version__

    if "header" not in arrays:
        raise ValueError(f"{CORRUPT}: missing arrays header")
    try:
        header = json.loads(arrays["header"].astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{CORRUPT}: unreadable header ({exc})") from None
    except RecursionError:
        raise ValueError(f"{CORRUPT}: unreadable header (JSON nested too deeply)") from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise ValueError(f"{CORRUPT}: not an AnomalyClusterer model")
    version = header.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise ValueError(
            f"{CORRUPT}: format version {version!r}, this anomclust_lite "
            f"({__version__}) reads versions {', '.join(map(str, _READABLE_VERSIONS))}"
        )
    missing = [key for key in _ARRAYS + (_ARRAYS_V3 if version >= 3 else ()) if key not in arrays]
    if missing:
        raise ValueError(f"{CORRUPT}: missing arrays {', '.join(missing)}")
    return header


def _from_arrays(arrays: Mapping[str, np.ndarray]) -> SavedModel:
    header = _read_header(arrays)
    try:
        params = dict(header["params"])
        choice = KChoice.from_dict(header["k_choice"])
        k = int(header["k"])
        threshold = _optional_float(header["new_type_threshold"])
        good_threshold = _optional_float(header["good_threshold"])
        good_group = header["good_group"]
        if not isinstance(good_group, bool):
            raise ValueError("good_group must be true or false")
        kind = str(header["reference_kind"])
        m = int(header["n_patches"])
        meta = dict(header["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{CORRUPT}: bad header ({exc})") from None
    if "projection_mean" not in arrays:  # a version 2 file: fitted without the projection
        params.setdefault("project_out", 0)
    if header["format_version"] < 4 and params.get("weights") == "semi" and params.get("tau") is None:
        params["tau"] = _OLD_TAU_SEMI  # the default it was fitted with
    if header["format_version"] < 5:
        params.setdefault("consensus", "off")  # fitted before consensus Ward existed
    projection = _projection(arrays)
    novelty_reference = arrays["novelty_reference"]
    if novelty_reference.ndim == 3 and novelty_reference.shape[0] == 0:
        novelty_reference = arrays["reference"]
    novelty = NoveltyState(arrays["novelty_embeddings"], novelty_reference,
                           arrays["novelty_scales"], arrays["novelty_thresholds"], arrays["novelty_fitted"])
    state = FittedState(
        centers=arrays["centers"], labels=arrays["labels"], wa_distances=arrays["fitted_distances"],
        hashes=arrays["fitted_hashes"], reference=arrays["reference"], reference_kind=kind, threshold=threshold,
        anomaly_scores=arrays["anomaly_scores"], good_threshold=good_threshold, good_group=good_group,
        novelty=novelty, projection=projection,
    )
    problems = (_array_problems(state, k) + _trust_problems(state, k) + _projection_problems(state, params)
                + _setting_problems(kind, 0.0 if threshold is None else threshold, m))
    problems = problems or _consistency_problems(state, params, m)
    if problems:
        raise ValueError(f"{CORRUPT}: " + "; ".join(problems))
    return SavedModel(params, state, k, choice, m, meta)


def _array_problems(state: FittedState, k: int) -> List[str]:
    """What is wrong with the arrays of a model of ``k`` clusters (nothing: an empty list)."""
    centers, labels, dists, hashes, reference = (
        state.centers, state.labels, state.wa_distances, state.hashes, state.reference)
    n = labels.shape[0] if labels.ndim == 1 else -1
    problems = []
    if centers.ndim != 2 or centers.shape[0] != k or centers.dtype != np.float64 or not np.isfinite(centers).all():
        problems.append(f"centers has shape {centers.shape}, expected ({k}, D) finite float64")
    if labels.ndim != 1 or labels.dtype != np.int64 or n < 2 or (n and (labels.min() < -1 or labels.max() >= k)):
        problems.append("labels must be N >= 2 int64 cluster ids in 0..K-1 (or -1, the good group)")
    if dists.shape != (n,) or dists.dtype != np.float64:
        problems.append(f"fitted_distances has shape {dists.shape}, expected ({n},)")
    if hashes.shape != (n, HASH_BYTES) or hashes.dtype != np.uint8:
        problems.append(f"fitted_hashes has shape {hashes.shape}, expected ({n}, {HASH_BYTES})")
    if (
        reference.ndim != 3
        or reference.dtype != np.float16
        or (centers.ndim == 2 and reference.shape[2] != centers.shape[1])
    ):
        problems.append(f"reference has shape {reference.shape} / dtype {reference.dtype}, expected (R, M, D) float16")
    return problems


def _projection(arrays: Mapping[str, np.ndarray]) -> Projection:
    """The stored projection; the identity for a version 2 file (which has none)."""
    if "projection_mean" in arrays and "projection_components" in arrays:
        return Projection(arrays["projection_mean"], arrays["projection_components"])
    centers = arrays["centers"]
    return identity_projection(centers.shape[1] if centers.ndim == 2 and centers.shape[1] > 0 else 1)


def _projection_problems(state: FittedState, params: Mapping[str, Any]) -> List[str]:
    """What is wrong with the projection: shapes, finiteness, orthonormal rows, rank = ``project_out``."""
    mean, comp = state.projection.mean, state.projection.components
    d = state.centers.shape[1] if state.centers.ndim == 2 else -1
    if mean.shape != (d,) or comp.ndim != 2 or comp.shape[1] != d or not (
            np.isfinite(mean).all() and np.isfinite(comp).all()):
        return [f"projection_mean / projection_components have shapes {mean.shape} / {comp.shape}, "
                f"expected ({d},) / (r, {d}) finite float64"]
    want = params.get("project_out")
    try:
        expected = projection_rank(want, d)
    except ValueError:
        expected = None
    if comp.shape[0] != expected:
        return [f"projection_components has {comp.shape[0]} rows, which project_out={want!r} does not give for D={d}"]
    if comp.shape[0] and np.abs(comp @ comp.T - np.eye(comp.shape[0])).max() > 1e-6:
        return ["projection_components rows are not orthonormal"]
    return []


def _optional_float(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number or null, got {value!r}")
    return float(value)


def _trust_problems(state: FittedState, k: int) -> List[str]:
    """What is wrong with the anomaly-score and novelty arrays (nothing: an empty list)."""
    nov, n = state.novelty, state.labels.shape[0]
    d = state.centers.shape[1] if state.centers.ndim == 2 else -1
    checks = [
        ("anomaly_scores", state.anomaly_scores, (n,)), ("novelty_embeddings", nov.embeddings, (n, d)),
        ("novelty_scales", nov.scales, (2,)), ("novelty_thresholds", nov.thresholds, (k,)),
        ("novelty_fitted", nov.fitted, (n,)),
    ]
    problems = [f"{name} has shape {arr.shape}, expected {shape} finite numbers" for name, arr, shape in checks
                if arr.shape != shape or arr.dtype.kind != "f" or not np.isfinite(arr).all()]
    if nov.reference.ndim != 3 or nov.reference.dtype != np.float16 or nov.reference.shape[2] != d:
        problems.append(f"novelty_reference has shape {nov.reference.shape}, expected (R, M', {d}) float16")
    elif nov.reference is not state.reference and (nov.reference.size == 0 or not np.isfinite(nov.reference).all()):
        problems.append("novelty_reference is empty or has NaN or inf values")
    if not problems and (nov.scales <= 0).any():
        problems.append("novelty_scales must be > 0")
    return problems


def _setting_problems(kind: str, threshold: float, m: int) -> List[str]:
    problems = []
    if kind not in REFERENCE_KINDS:
        problems.append(f"reference_kind {kind!r} is not one of {', '.join(REFERENCE_KINDS)}")
    if not (math.isfinite(threshold) and threshold >= 0):
        problems.append(f"new_type_threshold {threshold!r} is not a finite number >= 0")
    if not 1 <= m <= MAX_N_PATCHES:
        problems.append(f"n_patches {m} is not in 1..{MAX_N_PATCHES}")
    return problems


def _consistency_problems(state: FittedState, params: Mapping[str, Any], m: int) -> List[str]:
    """The fields checked against each other (each problem names its field)."""
    problems = []
    n, kind, reference = state.labels.shape[0], state.reference_kind, state.reference
    if not (np.isfinite(state.wa_distances).all() and (state.wa_distances >= 0).all()):
        problems.append("fitted_distances has NaN, inf or negative values")
    if not np.isfinite(reference).all():
        problems.append("reference has NaN or inf values")
    if reference.shape[0] < 1:
        problems.append("reference is empty")
    if kind == "images" and reference.shape[1] != m:
        problems.append(f"reference has {reference.shape[1]} patches per image but n_patches is {m}")
    if kind == "images" and reference.shape[0] > n:
        problems.append(f"reference has {reference.shape[0]} images, more than the {n} fitted images")
    expected_kind = {"semi": "normal-patches", "unsupervised": "images"}.get(params.get("weights"))
    if expected_kind is not None and kind != expected_kind:
        problems.append(f"reference_kind {kind!r} does not match weights={params.get('weights')!r} "
                        f"(expected {expected_kind!r})")
    return problems

"""Image files -> bags of L2-normalised patch embeddings with an ONNX model.

Recipe, per image: :func:`~anomclust_lite.features.images.load_image` (RGB) ->
:func:`~anomclust_lite.features.images.preprocess` (resize the shorter side, centre
crop, ImageNet normalisation) -> ONNX model -> one NCHW feature map
``(C, h, w)`` -> 3x3 average pooling (stride 1, zero padding counted in the
mean, as ``torch.nn.AvgPool2d(3, 1, 1)``; skipped when the model already pools,
i.e. its metadata has ``anomclust_lite.pooled = "1"``) -> ``(h*w, C)`` patches in
row-major ``(h, w)`` order -> each patch scaled to unit L2 norm. A bag is
float32 ``(M = h*w, D = C)``.

Decoding and preprocessing run in a small thread pool (Pillow releases the
GIL) while the main thread runs the model, so the two overlap; results keep
the order of the input paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.defaults import BAG_DTYPES
from ..core.validation import check_choice, check_int
from .cache import CACHE_FORMAT_VERSION, FeatureCache, file_sha256
from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageLoadError,
    ImageProblem,
    _check_resize_crop,
    _read_file,
    display_path,
    load_image_bytes,
    preprocess,
)
from .models import resolve_model
from ..core.normalize import normalize_patches

__all__ = [
    "POOLED_METADATA_KEY",
    "Extractor",
    "ExtractionResult",
    "avg_pool3x3",
    "feature_map_to_patches",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: ONNX metadata key; value ``"1"`` means the graph already applies the 3x3 pooling.
POOLED_METADATA_KEY = "anomclust_lite.pooled"

_DEVICES = ("cpu", "cuda")
_ON_ERROR = ("raise", "skip")


def avg_pool3x3(feature_map: np.ndarray) -> np.ndarray:
    """3x3 average pooling, stride 1, zero padding of 1 counted in the mean.

    Equals ``torch.nn.AvgPool2d(3, stride=1, padding=1)`` (its default
    ``count_include_pad=True``): every output is the sum of its 3x3
    neighbourhood divided by 9, border outputs included. Sums are taken in
    float64.

    Parameters
    ----------
    feature_map : numpy.ndarray, shape (..., h, w)
        Feature maps; the last two axes are pooled.

    Returns
    -------
    numpy.ndarray
        Same shape; float64 for float64 input, else float32.

    Examples
    --------
    >>> avg_pool3x3(np.ones((1, 3, 3)))[0]
    array([[0.44444444, 0.66666667, 0.44444444],
           [0.66666667, 1.        , 0.66666667],
           [0.44444444, 0.66666667, 0.44444444]])
    """
    x = np.asarray(feature_map)
    if x.ndim < 2:
        raise ValueError(f"feature_map must have at least 2 dimensions (..., h, w); got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"feature_map must be a floating-point array; got dtype {x.dtype}")
    out_dtype = np.float64 if x.dtype == np.float64 else np.float32
    h, w = x.shape[-2:]
    padded = np.zeros(x.shape[:-2] + (h + 2, w + 2), dtype=np.float64)
    padded[..., 1:-1, 1:-1] = x
    rows = padded[..., 0:h, :] + padded[..., 1 : h + 1, :] + padded[..., 2 : h + 2, :]
    total = rows[..., 0:w] + rows[..., 1 : w + 1] + rows[..., 2 : w + 2]
    return (total / 9.0).astype(out_dtype, copy=False)


def feature_map_to_patches(feature_maps: np.ndarray) -> np.ndarray:
    """Reshape NCHW feature maps to patch rows ``(N, h*w, C)``, row-major over (h, w).

    Examples
    --------
    >>> fm = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    >>> feature_map_to_patches(fm)[0, 1].tolist()  # image 0, position (0, 1)
    [1.0, 5.0, 9.0]
    """
    x = np.asarray(feature_maps)
    if x.ndim != 4:
        raise ValueError(f"feature_maps must be 4-D (N, C, h, w); got shape {x.shape}")
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1).reshape(n, h * w, c))


@dataclass
class ExtractionResult:
    """Output of :meth:`Extractor.extract_all`.

    Attributes
    ----------
    bags : numpy.ndarray
        ``(N_kept, M, D)`` unit-norm patch embeddings (float32, or float16
        with ``bag_dtype="float16"``), in input order.
    paths : list of pathlib.Path
        The ``N_kept`` images behind ``bags``, in the same order.
    failures : list of ImageProblem
        Images that could not be used, with a one-line reason, in input order.
    cache_hits : int
        Images whose bags came from the feature cache.
    computed : int
        Images that went through the model.
    timings : dict of str to float
        Seconds: ``decode`` (reading, hashing, decoding and preprocessing,
        summed over the decoding threads), ``inference`` (model runs),
        ``postprocess`` (pooling, normalisation, cache writes), ``wait`` (the
        model loop waiting for decoded images) and ``total`` (wall clock).
    """

    bags: np.ndarray
    paths: List[Path]
    failures: List[ImageProblem] = field(default_factory=list)
    cache_hits: int = 0
    computed: int = 0
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass
class _Prepared:
    """What a decoding thread hands to the model loop for one image."""

    index: int
    path: Path
    seconds: float
    tensor: "Optional[np.ndarray]" = None
    cached: "Optional[np.ndarray]" = None
    cache_key: "Optional[str]" = None
    error: "Optional[Exception]" = None


class Extractor:
    """Turns image files into bags of patch embeddings with an ONNX model.

    Parameters
    ----------
    model : str or os.PathLike, optional
        ONNX model file. None: :func:`anomclust_lite.features.models.resolve_model`
        (``$ANOMCLUST_MODEL``, then the user cache, then a build or download
        of WideResNet-50-2).
    output : str, optional
        Name of the model output to use; needed when the model has several.
        It must be a 4-D NCHW feature map.
    resize : int, default 256
        Shorter side after resizing (both sides with ``crop=None``).
    crop : int or None, default 224
        Centre-crop side, ``<= resize``; None resizes the whole frame to
        ``resize x resize`` without cropping.
    pool : {3, 1, None}, default 3
        3: 3x3 average pooling of the feature map; 1 or None: none.
    device : {"cpu", "cuda"}, default "cpu"
        "cuda" needs onnxruntime's CUDAExecutionProvider.
    batch_size : int, default 8
        Images per model run (models with a fixed batch dimension use theirs).
    threads : int, optional
        onnxruntime ``intra_op_num_threads``; None keeps onnxruntime's default
        (one thread per physical core).
    cache_dir : str or os.PathLike, optional
        Feature cache folder (:class:`~anomclust_lite.features.cache.FeatureCache`);
        None disables caching.
    decode_workers : int, optional
        Threads decoding images; default ``min(4, os.cpu_count())``.
    max_pixels : int, default DEFAULT_MAX_PIXELS
        Larger images are refused (see :mod:`anomclust_lite.features.images`).
    allow_download : bool, default True
        Only with ``model=None``: allow downloading the WideResNet-50-2
        checkpoint.

    Raises
    ------
    ModelNotFoundError
        No model given and none could be found.
    FileNotFoundError
        ``model`` does not exist.
    ValueError
        A bad argument, a model that is not valid ONNX, a model whose input
        is not ``(batch, 3, H, W)`` float32, an ambiguous or unknown ``output``,
        an output that is not 4-D, or ``device="cuda"`` without CUDA support.
    ImportError
        onnxruntime is not installed.

    Examples
    --------
    >>> ext = Extractor("model.onnx", output="relu_43")      # doctest: +SKIP
    >>> bags = ext.extract(["a.png", "b.png"])               # doctest: +SKIP
    >>> bags.shape                                           # doctest: +SKIP
    (2, 784, 128)
    """

    def __init__(
        self,
        model: "Optional[PathLike]" = None,
        *,
        output: "Optional[str]" = None,
        resize: int = 256,
        crop: "Optional[int]" = 224,
        pool: "Optional[int]" = 3,
        device: str = "cpu",
        batch_size: int = 8,
        threads: "Optional[int]" = None,
        cache_dir: "Optional[PathLike]" = None,
        decode_workers: "Optional[int]" = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_download: bool = True,
    ) -> None:
        self.resize, self.crop = _check_resize_crop(resize, crop)
        if pool is not None and (isinstance(pool, bool) or pool not in (1, 3)):
            raise ValueError(f"pool must be 3 (3x3 average pooling), 1 or None (no pooling); got {pool!r}")
        self.device = check_choice(device, "device", _DEVICES)
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self.threads = None if threads is None else check_int(threads, "threads", low=1)
        default_workers = min(4, os.cpu_count() or 1)
        self.decode_workers = (
            default_workers if decode_workers is None else check_int(decode_workers, "decode_workers", low=1)
        )
        self.max_pixels = check_int(max_pixels, "max_pixels", low=1)
        if output is not None and not isinstance(output, str):
            raise ValueError(f"output must be the name of a model output (a string); got {output!r}")

        self.model_path = resolve_model(model, allow_download=allow_download)
        self._session = self._open_session()
        self._input_name, self._model_batch = self._check_input()
        self.output = self._choose_output(output)
        meta = self._session.get_modelmeta().custom_metadata_map
        self.pooling_in_graph = meta.get(POOLED_METADATA_KEY) == "1"
        wants_pool = pool == 3
        if self.pooling_in_graph and not wants_pool:
            raise ValueError(
                f"pool={pool!r} asks for no pooling, but model {display_path(self.model_path)} already applies "
                f"3x3 pooling inside the graph (metadata {POOLED_METADATA_KEY}=1); use pool=3 with this model"
            )
        self.pool = 3 if wants_pool else None
        self._apply_pool = wants_pool and not self.pooling_in_graph
        self._cache = None if cache_dir is None else FeatureCache(cache_dir)
        self._model_hash: "Optional[str]" = None
        self._feature_shape: "Optional[Tuple[int, int, int]]" = None

    # ------------------------------------------------------------------ model
    def _open_session(self) -> Any:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(
                "feature extraction needs onnxruntime; install it with `pip install onnxruntime` "
                "(or `pip install anomclust_lite[onnx]`)"
            ) from exc
        path = self.model_path
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    "device='cuda' needs onnxruntime's CUDAExecutionProvider, which this onnxruntime does not "
                    f"have (available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                    "or use device='cpu'"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        try:
            with open(path, "rb") as fh:
                head = fh.read(1)
        except OSError as exc:
            raise FileNotFoundError(f"model {display_path(path)} cannot be read ({exc})") from exc
        if not head:
            raise ValueError(f"model {display_path(path)} is an empty file, not an ONNX model")
        try:
            session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = " ".join(str(exc).split())[:300]
            raise ValueError(
                f"model {display_path(path)} could not be loaded as an ONNX model ({type(exc).__name__}: {reason})"
            ) from exc
        if self.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise ValueError(
                "device='cuda' was requested but onnxruntime could not start the CUDA provider "
                "(check the CUDA/cuDNN installation) ; use device='cpu'"
            )
        return session

    def _check_input(self) -> Tuple[str, Optional[int]]:
        inputs = self._session.get_inputs()
        where = f"model {display_path(self.model_path)}"
        if len(inputs) != 1:
            raise ValueError(f"{where} has {len(inputs)} inputs; a feature extractor needs exactly one image input")
        inp = inputs[0]
        shape = list(inp.shape) if inp.shape is not None else []
        if len(shape) != 4:
            raise ValueError(f"{where} input {inp.name!r} has shape {shape}; expected 4-D (batch, 3, H, W)")
        if isinstance(shape[1], int) and shape[1] != 3:
            raise ValueError(f"{where} input {inp.name!r} has {shape[1]} channels; expected 3 (RGB)")
        if inp.type != "tensor(float)":
            raise ValueError(f"{where} input {inp.name!r} has type {inp.type}; expected tensor(float) (float32)")
        side = self.crop if self.crop is not None else self.resize
        for axis, name in ((2, "height"), (3, "width")):
            if isinstance(shape[axis], int) and shape[axis] != side:
                raise ValueError(
                    f"{where} expects input {name} {shape[axis]} but crop={self.crop}, resize={self.resize} "
                    f"give {side}; set crop (or resize with crop=None) to {shape[axis]}"
                )
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return inp.name, batch

    def _choose_output(self, output: "Optional[str]") -> str:
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        listed = ", ".join(repr(n) for n in names)
        where = f"model {display_path(self.model_path)}"
        if output is None:
            if len(names) != 1:
                raise ValueError(f"{where} has outputs {listed}; choose one with output=/--model-output")
            output = names[0]
        elif output not in names:
            raise ValueError(f"output {output!r} is not an output of {where}; it has {listed}")
        shape = next(o.shape for o in outputs if o.name == output)
        if shape is not None and len(shape) != 4:
            raise ValueError(
                f"output {output!r} of {where} has shape {list(shape)}; expected a 4-D feature map (N, C, h, w)"
            )
        return output

    @property
    def model_hash(self) -> str:
        """Hex sha256 of the model file."""
        if self._model_hash is None:
            digest = hashlib.sha256()
            with open(self.model_path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            self._model_hash = digest.hexdigest()
        return self._model_hash

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H, W) of the preprocessed images fed to the model."""
        side = self.crop if self.crop is not None else self.resize
        return side, side

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on ``(n, 3, H, W)`` float32 and return the chosen output ``(n, C, h, w)``."""
        n = batch.shape[0]
        step = self._model_batch or self.batch_size
        parts = []
        for s in range(0, n, step):
            chunk = batch[s : s + step]
            if self._model_batch is not None and chunk.shape[0] != self._model_batch:
                pad = np.zeros((self._model_batch - chunk.shape[0],) + chunk.shape[1:], dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            (out,) = self._session.run([self.output], {self._input_name: chunk})
            out = np.asarray(out)
            if out.ndim != 4:
                raise ValueError(
                    f"output {self.output!r} of model {display_path(self.model_path)} has shape {out.shape}; "
                    "expected a 4-D feature map (N, C, h, w)"
                )
            parts.append(out[: min(step, n - s)])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _feature_map_shape(self) -> Tuple[int, int, int]:
        if self._feature_shape is None:
            shape = next(o.shape for o in self._session.get_outputs() if o.name == self.output)
            if shape is not None and all(isinstance(v, int) and v > 0 for v in shape[1:]):
                self._feature_shape = (shape[1], shape[2], shape[3])
            else:  # symbolic dims: one dry run on zeros
                h, w = self.input_size
                out = self._run(np.zeros((1, 3, h, w), dtype=np.float32))
                self._feature_shape = tuple(int(v) for v in out.shape[1:])  # type: ignore[assignment]
        return self._feature_shape  # type: ignore[return-value]

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w) patch grid of one image; ``M = h * w``."""
        _, h, w = self._feature_map_shape()
        return h, w

    @property
    def dim(self) -> int:
        """Embedding dimension ``D`` (channels of the output)."""
        return self._feature_map_shape()[0]

    @property
    def providers(self) -> List[str]:
        """onnxruntime execution providers in use."""
        return list(self._session.get_providers())

    @property
    def thread_settings(self) -> Dict[str, object]:
        """onnxruntime and decoding thread settings (``"default"`` = onnxruntime's choice)."""
        options = self._session.get_session_options()
        intra = options.intra_op_num_threads
        inter = options.inter_op_num_threads
        return {
            "intra_op_num_threads": intra if intra > 0 else "default",
            "inter_op_num_threads": inter if inter > 0 else "default",
            "execution_mode": str(options.execution_mode).rsplit(".", 1)[-1],
            "decode_workers": self.decode_workers,
            "cpu_count": os.cpu_count(),
        }

    @property
    def cache_settings(self) -> Dict[str, object]:
        """Settings that define a bag; part of every feature-cache key."""
        return {
            "format": CACHE_FORMAT_VERSION,
            "model_sha256": self.model_hash,
            "output": self.output,
            "resize": self.resize,
            "crop": self.crop,
            "pool": self.pool,
            "pooling_in_graph": self.pooling_in_graph,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }

    def describe(self) -> Dict[str, object]:
        """JSON-serialisable summary of the settings (for ``summary.json``)."""
        return {
            "model": display_path(self.model_path),
            "model_sha256": self.model_hash,
            "output": self.output,
            "input": self._input_name,
            "resize": self.resize,
            "crop": self.crop,
            "pool": self.pool,
            "pooling_in_graph": self.pooling_in_graph,
            "grid": list(self.grid),
            "dim": self.dim,
            "device": self.device,
            "providers": self.providers,
            "batch_size": self._model_batch or self.batch_size,
            "threads": self.thread_settings,
            "max_pixels": self.max_pixels,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "cache_dir": None if self._cache is None else display_path(self._cache.directory),
        }

    def __repr__(self) -> str:
        return (
            f"Extractor({display_path(self.model_path)!r}, output={self.output!r}, resize={self.resize}, "
            f"crop={self.crop}, pool={self.pool}, device={self.device!r})"
        )

    # ------------------------------------------------------------ embeddings
    def _postprocess(self, feature_maps: np.ndarray) -> List["np.ndarray | str"]:
        """Pool + normalise each map; per image a bag ``(M, D)`` or a failure reason."""
        results: List["np.ndarray | str"] = []
        for fmap in feature_maps:
            if not np.isfinite(fmap).all():
                results.append(f"output {self.output!r} of the model contains NaN or inf values")
                continue
            pooled = avg_pool3x3(fmap) if self._apply_pool else fmap.astype(np.float32, copy=False)
            patches = feature_map_to_patches(pooled[None])
            norms = np.sqrt(np.einsum("nmd,nmd->nm", patches, patches, dtype=np.float64))[0]
            zero = np.flatnonzero(norms < 1e-12)
            if zero.size:
                results.append(
                    f"{zero.size} of {norms.size} patches have an all-zero feature vector (first: patch "
                    f"{zero[0]}) and cannot be L2-normalised; try another output or model"
                )
                continue
            results.append(normalize_patches(patches)[0])
        return results

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Bags of preprocessed images.

        Parameters
        ----------
        batch : numpy.ndarray, shape (N, 3, H, W)
            Images as returned by :func:`~anomclust_lite.features.images.preprocess`,
            with ``(H, W) == self.input_size``.

        Returns
        -------
        numpy.ndarray
            float32 ``(N, M, D)``, unit-norm rows.

        Raises
        ------
        ValueError
            Bad shape, or the model output of an image is not finite or has
            an all-zero patch.
        """
        x = np.asarray(batch)
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"batch must have shape (N, 3, {self.input_size[0]}, {self.input_size[1]}); got {x.shape}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = []
        for s in range(0, x.shape[0], self.batch_size):
            for i, res in enumerate(self._postprocess(self._run(x[s : s + self.batch_size]))):
                if isinstance(res, str):
                    raise ValueError(f"batch image {s + i}: {res}")
                out.append(res)
        m = self.grid[0] * self.grid[1]
        return np.stack(out) if out else np.empty((0, m, self.dim), dtype=np.float32)

    def extract(
        self,
        paths: Iterable[PathLike],
        *,
        progress: "Optional[Callable[[int, int], None]]" = None,
    ) -> np.ndarray:
        """Bags of image files; stops at the first bad file.

        Parameters
        ----------
        paths : iterable of str or os.PathLike
            Image files.
        progress : callable, optional
            Called as ``progress(done, total)``.

        Returns
        -------
        numpy.ndarray
            float32 ``(N, M, D)``, in the order of ``paths``.

        Raises
        ------
        ImageLoadError
            A file cannot be read as an image.
        ValueError
            The model output of an image is not finite or has an all-zero
            patch (the message names the image).
        """
        return self.extract_all(paths, on_error="raise", progress=progress).bags

    def extract_all(
        self,
        paths: Iterable[PathLike],
        *,
        on_error: str = "skip",
        progress: "Optional[Callable[[int, int], None]]" = None,
        bag_dtype: str = "float32",
    ) -> ExtractionResult:
        """Bags of image files, collecting the files that fail.

        Each new bag is written to the feature cache (if any) as soon as it is
        computed, so an interrupted run resumes where it stopped.

        Parameters
        ----------
        paths : iterable of str or os.PathLike
            Image files.
        on_error : {"skip", "raise"}, default "skip"
            "skip": record a failing image in ``failures`` and go on;
            "raise": raise at the first failing image.
        progress : callable, optional
            Called as ``progress(done, total)`` as images finish.
        bag_dtype : {"float32", "float16"}, default "float32"
            Storage type of the returned bags. ``"float16"`` halves the
            ``N * M * D`` buffer (the only allocation that grows with every
            image); bags are computed and cached in float32 either way.

        Returns
        -------
        ExtractionResult
            ``bags`` and ``paths`` of the images kept, ``failures``,
            ``cache_hits``, ``computed`` and ``timings``.
        """
        path_list = _check_paths(paths)
        check_choice(on_error, "on_error", _ON_ERROR)
        dtype = np.dtype(check_choice(bag_dtype, "bag_dtype", BAG_DTYPES))
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a callable progress(done, total) or None; got {progress!r}")
        started = time.perf_counter()
        total = len(path_list)
        h, w = self.grid
        bags = np.empty((total, h * w, self.dim), dtype=dtype)
        kept = np.zeros(total, dtype=bool)
        failures: Dict[int, ImageProblem] = {}
        timings = {"decode": 0.0, "inference": 0.0, "postprocess": 0.0, "wait": 0.0}
        counts = {"hits": 0, "computed": 0, "done": 0}
        settings = self.cache_settings if self._cache is not None else None
        pending: List[_Prepared] = []

        def finish(count: int) -> None:
            counts["done"] += count
            if progress is not None and count:
                progress(counts["done"], total)

        def fail(index: int, exc: Exception, reason: "Optional[str]" = None) -> None:
            if on_error == "raise":
                raise exc
            if reason is None:
                reason = exc.reason if isinstance(exc, ImageLoadError) else " ".join(str(exc).split())
            failures[index] = ImageProblem(path_list[index], reason)
            logger.warning("skipping %s: %s", display_path(path_list[index]), reason)

        def flush() -> None:
            if not pending:
                return
            t0 = time.perf_counter()
            maps = self._run(np.stack([p.tensor for p in pending]))  # type: ignore[misc]
            t1 = time.perf_counter()
            timings["inference"] += t1 - t0
            for item, res in zip(pending, self._postprocess(maps)):
                if isinstance(res, str):
                    fail(item.index, ValueError(f"image {display_path(item.path)}: {res}"), reason=res)
                    continue
                bags[item.index] = res
                kept[item.index] = True
                counts["computed"] += 1
                if self._cache is not None and item.cache_key is not None:
                    self._cache.put(item.cache_key, res, settings)  # type: ignore[arg-type]
            timings["postprocess"] += time.perf_counter() - t1
            done = len(pending)
            pending.clear()
            finish(done)

        step = self._model_batch or self.batch_size
        window = max(2 * step, 2 * self.decode_workers)
        executor = ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="anomclust-decode")
        futures: Deque["Future[_Prepared]"] = deque()
        try:
            next_index = 0
            for _ in range(total):
                while next_index < total and len(futures) < window:
                    futures.append(executor.submit(self._prepare, next_index, path_list[next_index], settings))
                    next_index += 1
                t0 = time.perf_counter()
                item = futures.popleft().result()
                timings["wait"] += time.perf_counter() - t0
                timings["decode"] += item.seconds
                if item.error is not None:
                    fail(item.index, item.error)
                    finish(1)
                elif item.cached is not None:
                    bags[item.index] = item.cached
                    kept[item.index] = True
                    counts["hits"] += 1
                    finish(1)
                else:
                    pending.append(item)
                    if len(pending) >= step:
                        flush()
            flush()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

        kept_index = np.flatnonzero(kept)
        for dst, src in enumerate(kept_index):  # compact in place: no second (N, M, D) buffer
            if dst != src:
                bags[dst] = bags[src]
        kept_bags = bags[: kept_index.size]
        timings["total"] = time.perf_counter() - started
        return ExtractionResult(
            bags=kept_bags,
            paths=[p for p, k in zip(path_list, kept) if k],
            failures=[failures[i] for i in sorted(failures)],
            cache_hits=counts["hits"],
            computed=counts["computed"],
            timings=timings,
        )

    def _prepare(self, index: int, path: Path, settings: "Optional[Dict[str, object]]") -> _Prepared:
        """Runs in a decoding thread: read, hash, look up the cache, decode, preprocess."""
        t0 = time.perf_counter()
        item = _Prepared(index=index, path=path, seconds=0.0)
        try:
            data = _read_file(path)
            if self._cache is not None and settings is not None:
                item.cache_key = self._cache.key(file_sha256(data), settings)
                h, w = self.grid
                item.cached = self._cache.get(item.cache_key, settings, shape=(h * w, self.dim))
            if item.cached is None:
                image = load_image_bytes(data, path, max_pixels=self.max_pixels)
                try:
                    item.tensor = preprocess(image, resize=self.resize, crop=self.crop, max_pixels=self.max_pixels)
                except ValueError as exc:  # an extreme aspect ratio
                    raise ImageLoadError(path, str(exc)) from exc
        except ImageLoadError as exc:
            item.error = exc
        except Exception as exc:  # anything else while decoding one file is that file's failure
            item.error = ImageLoadError(path, f"{type(exc).__name__}: {exc}")
        item.seconds = time.perf_counter() - t0
        return item


def _check_paths(paths: object) -> List[Path]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(
            f"paths must be a list of image paths, not a single path ({paths!r}); wrap it in a list "
            "or use anomclust_lite.features.images.find_images(folder).paths"
        )
    try:
        items: Sequence[object] = list(paths)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"paths must be an iterable of image paths; got {type(paths).__name__}") from None
    out = []
    for i, p in enumerate(items):
        if isinstance(p, bytes):
            out.append(Path(os.fsdecode(p)))
        elif isinstance(p, (str, os.PathLike)):
            out.append(Path(p))
        else:
            raise ValueError(f"paths[{i}] must be a str or os.PathLike path; got {type(p).__name__}")
    return out

"""Image files -> bags of L2-normalised patch embeddings with an ONNX model.

Recipe, per image: :func:`~anomclust_lite.features.images.load_image` (RGB) ->
:func:`~anomclust_lite.features.preprocess.preprocess` (resize the shorter side,
centre crop, ImageNet normalisation) -> ONNX model
(:class:`~anomclust_lite.features.onnx_session.BackboneSession`) -> one NCHW
feature map ``(C, h, w)`` -> :mod:`~anomclust_lite.features.postprocess`: 3x3
average pooling (skipped when the model already pools, i.e. its metadata has
``anomclust_lite.pooled = "1"``), ``(h*w, C)`` patches in row-major ``(h, w)``
order, each scaled to unit L2 norm. A bag is float32 ``(M = h*w, D = C)``.

:meth:`Extractor.extract_all` runs the steps of
:mod:`~anomclust_lite.features.pipeline`: decoding and preprocessing in a small
thread pool while the main thread runs the model; results keep the order of
the input paths. :attr:`Extractor.settings` are the settings that define a
bag: they key the feature cache and open :meth:`Extractor.describe`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.defaults import BAG_DTYPES, DEFAULT_MEMORY_MB
from ..core.validation import check_choice, check_int, check_memory_mb, check_n_threads
from ..files.array_store import ArrayStore
from ..files.npy_rows import NpyRows
from .cache import CACHE_FORMAT_VERSION, FeatureCache
from .images import DEFAULT_MAX_PIXELS, display_path
from .memory import check_input_batch, check_patch_grid
from .models import check_model_unchanged, resolve_backbone
from .onnx_session import POOLED_METADATA_KEY, BackboneSession
from .pipeline import ExtractionResult, ExtractionRun, Preparation, prepared_in_order
from .postprocess import bags_of_feature_maps
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, check_resize_crop

__all__ = ["Extractor"]

PathLike = Union[str, "os.PathLike[str]"]

_DEVICES = ("cpu", "cuda")
_ON_ERROR = ("raise", "skip")


class Extractor:
    """Turns image files into bags of patch embeddings with an ONNX model.

    Parameters
    ----------
    model : str or os.PathLike, optional
        ONNX model file. None: ``backbone`` if given, else ``$ANOMCLUST_MODEL``,
        else the embedded ResNet-50 v2 backbone
        (:func:`anomclust_lite.features.models.resolve_backbone`).
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
        "cuda" needs onnxruntime-gpu (its CUDAExecutionProvider) and runs
        with :data:`~anomclust_lite.features.onnx_session.CUDA_OPTIONS` (no
        TF32); if the provider does not start it is refused, never replaced
        by the CPU.
    batch_size : int, default 8
        Images per model run (models with a fixed batch dimension use theirs).
    threads : int, optional
        onnxruntime ``intra_op_num_threads``; None keeps onnxruntime's default
        (one thread per physical core).
    cache_dir : str, os.PathLike or FeatureCache, optional
        Feature cache folder (:class:`~anomclust_lite.features.cache.FeatureCache`),
        or a store already opened (e.g. ``CacheFolder(...).store("features")``,
        which shares its folder's write guard); None disables caching.
    decode_workers : int, optional
        Threads decoding images; default ``min(4, os.cpu_count())``. With
        ``device="cuda"`` as many more pool and normalise the model's output
        maps of each batch in parallel (none when 1).
    max_pixels : int, default DEFAULT_MAX_PIXELS
        Larger images are refused (see :mod:`anomclust_lite.features.images`).
    backbone : str, optional
        A backbone name instead of ``model``: ``"resnet50v2"`` (embedded),
        ``"wrn50"`` or a name given at ``anomclust-lite backbones build``.
        Which one ran, and where it came from, is :attr:`backbone_info`.
    memory_mb : float, default 512
        Working-memory budget in MiB (as ``AnomalyClusterer(memory_mb=...)``):
        sizes whose batch of model inputs exceeds the larger of it and 64 MiB
        are refused before the model is opened, and a patch grid for which
        scoring one image pair exceeds it once the model's grid is known
        (:mod:`anomclust_lite.features.memory`).

    Raises
    ------
    ModelNotFoundError
        ``model`` does not exist, or ``backbone`` is not ready (the message
        names the command that builds it).
    FileNotFoundError
        ``model`` does not exist.
    ValueError
        A bad argument, sizes over the ``memory_mb`` budget, a model that is
        not valid ONNX, a model whose input is not ``(batch, 3, H, W)``
        float32, an ambiguous or unknown ``output``,
        an output that is not 4-D, or ``device="cuda"`` without CUDA support.
    ImportError
        onnxruntime is not installed.

    Attributes
    ----------
    model_path : pathlib.Path
        The resolved model file.
    backbone : BackboneSession
        The opened model (:mod:`anomclust_lite.features.onnx_session`).
    settings : dict
        The settings that define a bag (see the property); they key the
        feature cache.

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
        cache_dir: "Optional[PathLike | ArrayStore]" = None,
        decode_workers: "Optional[int]" = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backbone: "Optional[str]" = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
    ) -> None:
        self.resize, self.crop = check_resize_crop(resize, crop)
        if pool is not None and (isinstance(pool, bool) or pool not in (1, 3)):
            raise ValueError(f"pool must be 3 (3x3 average pooling), 1 or None (no pooling); got {pool!r}")
        self.device = check_choice(device, "device", _DEVICES)
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self.threads = check_n_threads(threads, "threads")
        default_workers = min(4, os.cpu_count() or 1)
        self.decode_workers = (
            default_workers if decode_workers is None else check_int(decode_workers, "decode_workers", low=1)
        )
        self.max_pixels = check_int(max_pixels, "max_pixels", low=1)
        if output is not None and not isinstance(output, str):
            raise ValueError(f"output must be the name of a model output (a string); got {output!r}")
        self.memory_mb = check_memory_mb(memory_mb)
        check_input_batch(self.resize, self.crop, self.batch_size, self.memory_mb)

        self.backbone_info = resolve_backbone(model, backbone=backbone)
        self.model_path: Path = self.backbone_info.path  # type: ignore[assignment]  # ready: has a file
        self.backbone = BackboneSession(
            self.model_path,
            output=output,
            resize=self.resize,
            crop=self.crop,
            device=self.device,
            threads=self.threads,
            batch_size=self.batch_size,
        )
        check_model_unchanged(self.backbone_info, self.backbone.model_hash)
        self.output = self.backbone.output
        self.pooling_in_graph = self.backbone.pooling_in_graph
        wants_pool = pool == 3
        if self.pooling_in_graph and not wants_pool:
            raise ValueError(
                f"pool={pool!r} asks for no pooling, but model {display_path(self.model_path)} already applies "
                f"3x3 pooling inside the graph (metadata {POOLED_METADATA_KEY}=1); use pool=3 with this model"
            )
        self.pool = 3 if wants_pool else None
        self._apply_pool = wants_pool and not self.pooling_in_graph
        if cache_dir is None or isinstance(cache_dir, ArrayStore):
            self._cache = cache_dir
        else:
            self._cache = FeatureCache(cache_dir)
        check_patch_grid(self.resize, self.crop, self.grid, self.dim, self.memory_mb)

    # ------------------------------------------------------------ properties
    @property
    def model_hash(self) -> str:
        """Hex sha256 of the model file."""
        return self.backbone.model_hash

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H, W) of the preprocessed images fed to the model."""
        return self.backbone.input_size

    @property
    def grid(self) -> Tuple[int, int]:
        """(h, w) patch grid of one image; ``M = h * w``."""
        _, h, w = self.backbone.feature_map_shape()
        return h, w

    @property
    def dim(self) -> int:
        """Embedding dimension ``D`` (channels of the output)."""
        return self.backbone.feature_map_shape()[0]

    @property
    def providers(self) -> List[str]:
        """onnxruntime execution providers in use."""
        return self.backbone.providers

    @property
    def thread_settings(self) -> Dict[str, object]:
        """onnxruntime and decoding thread settings (``"default"`` = onnxruntime's choice)."""
        return {**self.backbone.thread_settings(), "decode_workers": self.decode_workers, "cpu_count": os.cpu_count()}

    @property
    def settings(self) -> Dict[str, object]:
        """The settings that define a bag: model file hash, output, resize, crop, pooling, normalisation.

        Two extractors with equal settings give equal bags for equal image
        bytes. They key every feature-cache entry (with the cache format
        version) and open :meth:`describe`. ``device`` is among them only for
        ``"cuda"``: the CUDA provider's bags differ from the CPU's in the last
        bits (an int8 model's by up to about 0.05), so the two never share a
        cache entry, and CPU entries keep the keys they always had.
        """
        on_gpu = {"device": self.device} if self.device != "cpu" else {}
        return {
            "model_sha256": self.model_hash,
            "output": self.output,
            "resize": self.resize,
            "crop": self.crop,
            "pool": self.pool,
            "pooling_in_graph": self.pooling_in_graph,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            **on_gpu,
        }

    def describe(self) -> Dict[str, object]:
        """JSON-serialisable summary: :attr:`settings`, then how the model runs (for ``summary.json``)."""
        return {
            "backbone": self.backbone_info.as_dict(),
            "model": display_path(self.model_path),
            **self.settings,
            "input": self.backbone.input_name,
            "grid": list(self.grid),
            "dim": self.dim,
            "device": self.device,
            "providers": self.providers,
            "batch_size": self.backbone.step,
            "threads": self.thread_settings,
            "max_pixels": self.max_pixels,
            "cache_dir": None if self._cache is None else display_path(self._cache.directory),
        }

    def __repr__(self) -> str:
        return (
            f"Extractor({display_path(self.model_path)!r}, output={self.output!r}, resize={self.resize}, "
            f"crop={self.crop}, pool={self.pool}, device={self.device!r})"
        )

    # ------------------------------------------------------------ embeddings
    def _postprocess(self, feature_maps: np.ndarray, executor: "Optional[Executor]" = None) -> "List[np.ndarray | str]":
        """Pool + normalise each map (in ``executor``'s threads if given); per image a bag ``(M, D)`` or a reason."""
        return bags_of_feature_maps(feature_maps, pool=self._apply_pool, output=self.output, executor=executor)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Bags of preprocessed images.

        Parameters
        ----------
        batch : numpy.ndarray, shape (N, 3, H, W)
            Images as returned by :func:`~anomclust_lite.features.preprocess.preprocess`,
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
            for i, res in enumerate(self._postprocess(self.backbone.run(x[s : s + self.batch_size]))):
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
        bags_file: "Optional[PathLike]" = None,
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
        bags_file : str or os.PathLike, optional
            Write the bags into this ``.npy`` file (created or overwritten; row
            by row, :class:`~anomclust_lite.files.npy_rows.NpyRows`) and return
            them as a read-only memory map of it, so that they need not fit in
            memory (e.g. for :class:`~anomclust_lite.AnomalyClusterer`'s
            fit-a-sample path, which reads them chunk by chunk). The caller
            deletes the file.

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
        with contextlib.ExitStack() as stack:
            # On a GPU the CPU would idle while the model loop pools and normalises a batch: it does so in
            # parallel there. On the CPU the model's threads already use the cores (2 cores: 0-8 % slower).
            parallel = self.device == "cuda" and self.decode_workers > 1
            post = None if not parallel else stack.enter_context(
                ThreadPoolExecutor(max_workers=self.decode_workers, thread_name_prefix="anomclust-post"))
            run = self._new_run(path_list, dtype, on_error, progress, bags_file, post)
            return self._run(run, path_list, started)

    def _run(self, run: ExtractionRun, path_list: List[Path], started: float) -> ExtractionResult:
        """Decode ``path_list`` in the decoding threads and feed ``run``, in order."""
        prepare = Preparation(
            resize=self.resize,
            crop=self.crop,
            max_pixels=self.max_pixels,
            bag_shape=run.bags.shape[1:],
            cache=self._cache,
            cache_settings=run.cache_settings,
        )
        window = max(2 * self.backbone.step, 2 * self.decode_workers)
        items = prepared_in_order(prepare, path_list, workers=self.decode_workers, window=window, timings=run.timings)
        with contextlib.closing(items):
            for item in items:
                run.add(item)
        run.flush()
        return run.result(started)

    def _new_run(
        self, paths: Sequence[Path], dtype: np.dtype, on_error: str, progress: "Optional[Callable[[int, int], None]]",
        bags_file: "Optional[PathLike]" = None, executor: "Optional[Executor]" = None,
    ) -> ExtractionRun:
        """An :class:`~anomclust_lite.features.pipeline.ExtractionRun` with its ``(N, M, D)`` buffer (in memory,
        or a memory map of ``bags_file``)."""
        h, w = self.grid
        shape = (len(paths), h * w, self.dim)
        buffer = np.empty(shape, dtype=dtype) if bags_file is None or not paths else NpyRows(bags_file, shape, dtype)
        return ExtractionRun(
            paths,
            buffer,
            on_error=on_error,
            progress=progress,
            batch_size=self.backbone.step,
            infer=self.backbone.run,
            postprocess=functools.partial(self._postprocess, executor=executor),
            cache=self._cache,
            # The format version sits inside the entry's settings too (as it always has: existing caches keep hitting).
            cache_settings=None if self._cache is None else {"format": CACHE_FORMAT_VERSION, **self.settings},
        )


def _check_paths(paths: object) -> List[Path]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(
            f"paths must be a list of image paths, not a single path ({paths!r}); wrap it in a list "
            "or use anomclust_lite.find_images(folder).paths"
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

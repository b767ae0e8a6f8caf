"""The steps of :meth:`~anomclust_lite.features.extractor.Extractor.extract_all`.

Per image, in input order:

1. **prepare** (a decoding thread, :class:`Preparation`): read the file,
   look its content hash up in the feature cache, else decode and
   preprocess it;
2. **collect** (the main thread, :func:`prepared_in_order`): take the
   prepared images in input order while the threads work ahead;
3. **add** (:meth:`ExtractionRun.add`): a cached bag is stored at once, a
   failure is recorded, an image tensor joins the batch;
4. **flush** (:meth:`ExtractionRun.flush`): a full batch runs through the
   model; each feature map is post-processed into a bag, stored and cached;
5. **result** (:meth:`ExtractionRun.result`): the kept bags are compacted in
   place and returned with the failures, counts and timings.

Decoding runs in a small thread pool (Pillow releases the GIL) while the
main thread runs the model, so the two overlap.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .cache import FeatureCache, file_sha256
from .images import ImageLoadError, ImageProblem, display_path, load_image_bytes, read_image_file
from .onnx_session import ModelRunError
from .preprocess import preprocess

__all__ = ["ExtractionResult", "PreparedImage", "Preparation", "prepared_in_order", "ExtractionRun"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int], None]


@dataclass
class ExtractionResult:
    """Output of :meth:`~anomclust_lite.features.extractor.Extractor.extract_all`.

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
        summed over the decoding threads), ``inference`` (model runs, with
        the data moved to and from a GPU), ``postprocess`` (pooling, normalisation,
        cache writes), ``wait`` (the
        model loop waiting for decoded images) and ``total`` (wall clock).
    """

    bags: np.ndarray
    paths: List[Path]
    failures: List[ImageProblem] = field(default_factory=list)
    cache_hits: int = 0
    computed: int = 0
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass
class PreparedImage:
    """What a decoding thread hands to the model loop for one image."""

    index: int
    path: Path
    seconds: float
    tensor: "Optional[np.ndarray]" = None
    cached: "Optional[np.ndarray]" = None
    cache_key: "Optional[str]" = None
    error: "Optional[Exception]" = None


@dataclass(frozen=True)
class Preparation:
    """Step 1, run in a decoding thread: read, hash, look up the cache, decode, preprocess.

    ``cache`` and ``cache_settings`` are both None when there is no feature cache;
    ``bag_shape`` is the ``(M, D)`` a cached bag must have.
    """

    resize: int
    crop: Optional[int]
    max_pixels: int
    bag_shape: Tuple[int, int]
    cache: Optional[FeatureCache] = None
    cache_settings: Optional[Mapping[str, object]] = None

    def __call__(self, index: int, path: Path) -> PreparedImage:
        t0 = time.perf_counter()
        item = PreparedImage(index=index, path=path, seconds=0.0)
        try:
            data = read_image_file(path, max_pixels=self.max_pixels)
            if self.cache is not None and self.cache_settings is not None:
                item.cache_key = self.cache.key(file_sha256(data), self.cache_settings)
                item.cached = self.cache.get(item.cache_key, self.cache_settings, shape=self.bag_shape)
            if item.cached is None:
                item.tensor = self._tensor(data, path)
        except ImageLoadError as exc:
            item.error = exc
        except Exception as exc:  # anything else while decoding one file is that file's failure
            item.error = ImageLoadError(path, f"{type(exc).__name__}: {exc}")
        item.seconds = time.perf_counter() - t0
        return item

    def _tensor(self, data: bytes, path: Path) -> np.ndarray:
        image = load_image_bytes(data, path, max_pixels=self.max_pixels)
        try:
            return preprocess(image, resize=self.resize, crop=self.crop, max_pixels=self.max_pixels)
        except ValueError as exc:  # an extreme aspect ratio
            raise ImageLoadError(path, str(exc)) from exc


def prepared_in_order(
    prepare: Preparation,
    paths: Sequence[Path],
    *,
    workers: int,
    window: int,
    timings: Dict[str, float],
) -> Iterator[PreparedImage]:
    """Step 2: yield every path's :class:`PreparedImage` in input order, up to ``window`` prepared ahead.

    Adds the threads' decoding seconds to ``timings["decode"]`` and the time
    spent waiting for them to ``timings["wait"]``. Close the generator to stop
    early; pending work is cancelled and the threads are joined.
    """
    total = len(paths)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anomclust-decode")
    futures: Deque["Future[PreparedImage]"] = deque()
    try:
        next_index = 0
        for _ in range(total):
            while next_index < total and len(futures) < window:
                futures.append(executor.submit(prepare, next_index, paths[next_index]))
                next_index += 1
            t0 = time.perf_counter()
            item = futures.popleft().result()
            timings["wait"] += time.perf_counter() - t0
            timings["decode"] += item.seconds
            yield item
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class ExtractionRun:
    """Steps 3-5: the state of one ``extract_all`` call.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The images, in input order.
    bags : numpy.ndarray or NpyRows, shape (N, M, D)
        Output buffer (the only allocation that grows with N; or rows of a
        file, :class:`~anomclust_lite.files.npy_rows.NpyRows`); filled in place.
    on_error : {"skip", "raise"}
        What a failing image does.
    progress : callable or None
        ``progress(done, total)``.
    batch_size : int
        Images per model run.
    infer : callable
        ``(n, 3, H, W)`` float32 -> feature maps ``(n, C, h, w)``.
    postprocess : callable
        Feature maps -> per image a bag ``(M, D)`` or a failure reason.
    cache, cache_settings : FeatureCache and its entry settings, or None
        Where new bags are stored.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        bags: np.ndarray,
        *,
        on_error: str,
        progress: Optional[ProgressCallback],
        batch_size: int,
        infer: Callable[[np.ndarray], np.ndarray],
        postprocess: "Callable[[np.ndarray], List[Union[np.ndarray, str]]]",
        cache: Optional[FeatureCache] = None,
        cache_settings: Optional[Mapping[str, object]] = None,
    ) -> None:
        self.paths = list(paths)
        self.bags = bags
        self.kept = np.zeros(len(self.paths), dtype=bool)
        self.failures: Dict[int, ImageProblem] = {}
        self.timings = {"decode": 0.0, "inference": 0.0, "postprocess": 0.0, "wait": 0.0}
        self.cache_hits = 0
        self.computed = 0
        self.done = 0
        self.pending: List[PreparedImage] = []
        self._on_error = on_error
        self._progress = progress
        self._batch_size = batch_size
        self._infer = infer
        self._postprocess = postprocess
        self._cache = cache
        self.cache_settings = cache_settings

    def add(self, item: PreparedImage) -> None:
        """Step 3: record a failure, store a cached bag, or queue the image for the model."""
        if item.error is not None:
            self._fail(item.index, item.error)
            self._finish(1)
        elif item.cached is not None:
            self._keep(item.index, item.cached)
            self.cache_hits += 1
            self._finish(1)
        else:
            self.pending.append(item)
            if len(self.pending) >= self._batch_size:
                self.flush()

    def flush(self) -> None:
        """Step 4: run the queued images through the model; store and cache their bags."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        maps: Optional[np.ndarray] = None
        try:
            maps = self._infer(np.stack([p.tensor for p in self.pending]))
        except ModelRunError:  # find the image(s) the model fails on: one at a time
            results = [self._one_image(item) for item in self.pending]
        t1 = time.perf_counter()
        self.timings["inference"] += t1 - t0
        if maps is not None:  # pooling and normalisation count as postprocessing
            results = self._postprocess(maps)  # type: ignore[misc]
        for item, res in zip(self.pending, results):
            if isinstance(res, str):
                self._fail(item.index, ValueError(f"image {display_path(item.path)}: {res}"), reason=res)
                continue
            self._keep(item.index, res)
            self.computed += 1
            if self._cache is not None and item.cache_key is not None:
                self._cache.put(item.cache_key, res, self.cache_settings)  # type: ignore[arg-type]
        self.timings["postprocess"] += time.perf_counter() - t1
        done = len(self.pending)
        self.pending.clear()
        self._finish(done)

    def _one_image(self, item: PreparedImage) -> "np.ndarray | str":
        """The bag of one image, or the model's one-line failure on it."""
        try:
            return self._postprocess(self._infer(item.tensor[None]))[0]  # type: ignore[index]
        except ModelRunError as exc:
            return str(exc)

    def result(self, started: float) -> ExtractionResult:
        """Step 5: the kept bags, compacted in place (no second ``(N, M, D)`` buffer)."""
        kept_index = np.flatnonzero(self.kept)
        for dst, src in enumerate(kept_index):
            if dst != src:
                self.bags[dst] = self.bags[src]
        self.timings["total"] = time.perf_counter() - started
        return ExtractionResult(
            bags=self.bags[: kept_index.size],
            paths=[p for p, k in zip(self.paths, self.kept) if k],
            failures=[self.failures[i] for i in sorted(self.failures)],
            cache_hits=self.cache_hits,
            computed=self.computed,
            timings=self.timings,
        )

    def _keep(self, index: int, bag: np.ndarray) -> None:
        self.bags[index] = bag
        self.kept[index] = True

    def _fail(self, index: int, exc: Exception, reason: "Optional[str]" = None) -> None:
        if self._on_error == "raise":
            raise exc
        if reason is None:
            reason = exc.reason if isinstance(exc, ImageLoadError) else " ".join(str(exc).split())
        path = self.paths[index]
        self.failures[index] = ImageProblem(path, reason)
        logger.warning("skipping %s: %s", display_path(path), reason)

    def _finish(self, count: int) -> None:
        self.done += count
        if self._progress is not None and count:
            self._progress(self.done, len(self.paths))

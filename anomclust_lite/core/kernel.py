"""The blocked patch-similarity kernel shared by the scores and bag distances.

For unit vectors ``||a - b||^2 = 2 - 2 a.b``, so every patch min-distance
between two images is a matrix product followed by row/column maxima.

Work is cut into *tasks*: one row image against a group of up to ``b``
column images. A task runs entirely in one worker thread: one SGEMM
``Z_i Z_B^T`` into the thread's own buffer, then the reductions of that
buffer on the same core in cache-sized row chunks, returning only small arrays
(``(1, M, b)`` row maxima, ``(b, M', 1)`` column maxima, ``(1, b)`` mean
distances). In symmetric mode the tasks of image ``i`` cover the images
after it only, so every unordered pair costs exactly one ``M x M' x D``
product and serves both directions; self-pairs are never computed.

Parallelism: the worker threads (one per available CPU) each run a
single-threaded BLAS -- the BLAS thread pools are limited to one thread
with ``threadpoolctl`` for the duration of the kernel, so one core's
reductions overlap the other cores' products instead of contending with
spinning BLAS threads. Small problems run inline in the calling thread,
also on the single-threaded BLAS (a multi-threaded BLAS may choose other
kernels, with other rounding, for the same product). When
``threadpoolctl`` finds no BLAS it can control, tasks run inline with
the BLAS's own threading, and results may then differ from the other
paths by float32 rounding.

The BLAS limit is process-wide, so sections that set it hold one
process-wide lock: concurrent calls from several threads take turns, and
the original setting is always restored.

Results are consumed in task order, and every task is computed the same
way whichever thread runs it, so results do not depend on the number of
threads (bitwise). The task width depends on ``memory_mb`` only, never on
the CPU count; other budgets change the similarities at most by float32
rounding, which the square root of ``2 - 2 s`` amplifies near distance 0.
Another image order changes results likewise by rounding only (a pair's
product is taken the other way round, sums run in another order).

Memory model: each worker holds one task's Gram buffer ``M x b*M'``
float32, a gathered column operand when the column images are not
contiguous, and the small reductions; ``workers * block_bytes(1, b, M, D)``
stays within ``memory_mb``, and the consumers' accumulators are O(N*M).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

__all__ = [
    "BlockResult",
    "plan_tasks",
    "block_reductions",
    "sims_to_dists",
    "block_bytes",
    "pair_bytes",
    "available_cpus",
    "n_tasks",
    "n_pairs",
    "limit_blas",
]

logger = logging.getLogger(__name__)

#: Upper bound on the column patches of one task: 4 images at M=784. Widths of
#: 3 to 6 images measured alike and better than 1, 2, 8 or 12 (BENCHMARKS.md);
#: the Gram buffer is then about 10 MB per worker.
MAX_TASK_COLS = 3200
#: Row chunk of the reductions: fits a core's private cache.
REDUCE_CHUNK_BYTES = 1 << 19
#: Task width is planned so that this many tasks fit ``memory_mb`` whatever the CPU count.
PLAN_WORKERS = 2
#: Below this many multiply-adds in total, tasks run inline (no thread pool).
INLINE_WORK = 1 << 27
_MIB = 1 << 20
#: Held while the BLAS thread pools are limited: the limit is process-wide, and
#: overlapping limits from several threads would restore each other's values
#: out of order. Kernel calls from several threads therefore take turns (each
#: already uses every CPU); nesting in one thread is allowed.
_BLAS_LOCK = threading.RLock()


def block_bytes(a: int, b: int, m: int, d: int) -> int:
    """Working bytes of one task of ``a`` row and ``b`` column images.

    Gram buffer ``a*M x b*M`` float32, gathered float32 operands
    ``(a + b) * M * D`` and the reductions (row maxima, column maxima,
    mean distances and their temporaries).
    """
    gram = a * b * m * m * 4
    operands = (a + b) * m * d * 4
    reductions = 6 * a * b * m * 8
    return gram + operands + reductions


def pair_bytes(m: int, d: int) -> int:
    """Working bytes of the smallest task (one image pair): the least ``memory_mb`` can buy."""
    return block_bytes(1, 1, m, d)


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def plan_tasks(m: int, d: int, memory_mb: float, n_cols: int, cpus: Optional[int] = None) -> "tuple[int, int]":
    """``(b, workers)``: column images per task and worker threads fitting ``memory_mb``.

    ``b`` is as large as :data:`MAX_TASK_COLS` allows (at least 1, at most
    ``n_cols``) while :data:`PLAN_WORKERS` tasks fit the budget; it does not
    depend on ``cpus``, so neither do the results. Then as many workers as
    the CPUs and the budget allow. Raises ``ValueError`` naming
    ``memory_mb`` when not even one image pair fits.

    Public (``anomclust_lite.plan_tasks``) so that a benchmark or a user
    sizing ``memory_mb`` can see the plan the scoring kernels will follow.

    Examples
    --------
    >>> plan_tasks(784, 512, 512.0, 160, cpus=2)
    (4, 2)
    >>> plan_tasks(784, 512, 1.0, 160)
    Traceback (most recent call last):
    ...
    ValueError: memory_mb=1 is too small for images of M=784 patches of D=512 dims: ...
    """
    budget = memory_mb * _MIB
    need = pair_bytes(m, d)
    if need > budget:
        raise ValueError(
            f"memory_mb={memory_mb:g} is too small for images of M={m} patches of D={d} dims: "
            f"one image pair needs {need / _MIB:.3g} MiB; raise memory_mb"
        )
    b = max(1, min(n_cols, MAX_TASK_COLS // m))
    while b > 1 and PLAN_WORKERS * block_bytes(1, b, m, d) > budget:
        b -= 1
    cpus = available_cpus() if cpus is None else max(1, cpus)
    workers = max(1, min(cpus, int(budget // block_bytes(1, b, m, d))))
    return b, workers


@dataclass(frozen=True)
class BlockResult:
    """Reductions of one task's Gram block between row and column images.

    Attributes
    ----------
    rows : ndarray, shape (a,)
        Row image indices (``a`` is 1).
    cols : ndarray, shape (b,)
        Column image indices; in symmetric mode all after the row image.
    row_max : ndarray, shape (a, M, b), float32, or None
        For each row patch, its best similarity in each column image;
        ``None`` when maxima were not requested.
    col_max : ndarray, shape (b, M', a), float32, or None
        For each column patch, its best similarity in each row image
        (the reverse direction); ``None`` unless requested.
    mean_dist : ndarray, shape (a, b), float64, or None
        Mean patch distance over all patch pairs; ``None`` unless requested.
    """

    rows: np.ndarray
    cols: np.ndarray
    row_max: Optional[np.ndarray]
    col_max: Optional[np.ndarray]
    mean_dist: Optional[np.ndarray]


def _is_contiguous(idx: np.ndarray) -> bool:
    return bool(idx.size) and int(idx[-1]) - int(idx[0]) + 1 == idx.size and bool(np.all(np.diff(idx) == 1))


class _Task:
    """Runs tasks in whichever thread calls it, with a per-thread Gram buffer."""

    def __init__(
        self, row_bags: np.ndarray, col_bags: np.ndarray, b: int, maxima: bool, col_max: bool, mean_dist: bool
    ) -> None:
        self.row_bags = row_bags
        self.col_bags = col_bags
        self.m = row_bags.shape[1]
        self.m_col = col_bags.shape[1]
        self.d = row_bags.shape[2]
        self.b = b
        self.want_rows = maxima
        self.want_cols = maxima and col_max
        self.want_mean = mean_dist
        self.local = threading.local()

    def _buffer(self) -> np.ndarray:
        buf = getattr(self.local, "gram", None)
        if buf is None:
            buf = self.local.gram = np.empty(self.m * self.b * self.m_col, dtype=np.float32)
        return buf

    def _operand(self, bags: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if _is_contiguous(idx):
            part = bags[idx[0] : idx[-1] + 1]
        else:
            part = bags.take(idx, axis=0)
        return part.astype(np.float32, copy=False).reshape(-1, self.d)

    def __call__(self, task: "Tuple[np.ndarray, np.ndarray]") -> BlockResult:
        rows, cols = task  # one row image
        nb = cols.size
        xa = self._operand(self.row_bags, rows)
        xb = self._operand(self.col_bags, cols)
        out = self._buffer()[: xa.shape[0] * xb.shape[0]].reshape(xa.shape[0], xb.shape[0])
        np.matmul(xa, xb.T, out=out)
        gram = out.reshape(self.m, nb, self.m_col)
        # Reduce in row chunks of about REDUCE_CHUNK_BYTES: each chunk is read
        # from the shared cache once for the row maxima, then again from the
        # core's own cache for the column maxima (and the distances).
        step = max(1, REDUCE_CHUNK_BYTES // (nb * self.m_col * 4))
        row_max = np.empty((self.m, nb), dtype=np.float32) if self.want_rows else None
        col_max = np.empty((nb, self.m_col), dtype=np.float32) if self.want_cols else None
        sums = np.zeros(nb, dtype=np.float64) if self.want_mean else None
        for s in range(0, self.m, step):
            chunk = gram[s : s + step]
            if row_max is not None:
                np.max(chunk, axis=2, out=row_max[s : s + step])
            if col_max is not None:
                if s == 0:
                    np.max(chunk, axis=0, out=col_max)
                else:
                    np.maximum(col_max, chunk.max(axis=0), out=col_max)
            if sums is not None:  # the buffer is ours until the next task: convert in place
                sums += sims_to_dists(chunk, out=chunk).sum(axis=(0, 2), dtype=np.float64)
        return BlockResult(
            rows=rows,
            cols=cols,
            row_max=None if row_max is None else row_max[None],
            col_max=None if col_max is None else col_max[:, :, None],
            mean_dist=None if sums is None else (sums / (self.m * self.m_col))[None],
        )


def _tasks(rows: np.ndarray, cols: np.ndarray, b: int, symmetric: bool) -> Iterator["Tuple[np.ndarray, np.ndarray]"]:
    for p in range(rows.size):
        start = p + 1 if symmetric else 0
        for c0 in range(start, cols.size, b):
            yield rows[p : p + 1], cols[c0 : c0 + b]


def _n_pairs(n_rows: int, n_cols: int, symmetric: bool) -> int:
    return n_rows * (n_rows - 1) // 2 if symmetric else n_rows * n_cols


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (scanned once, on first use)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def block_reductions(
    row_bags: np.ndarray,
    col_bags: Optional[np.ndarray] = None,
    *,
    memory_mb: float,
    row_index: Optional[np.ndarray] = None,
    col_index: Optional[np.ndarray] = None,
    maxima: bool = True,
    col_max: bool = False,
    mean_dist: bool = False,
    workers: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Iterator[BlockResult]:
    """Yield the reductions of every task's Gram block, in a fixed order.

    Symmetric mode (``col_bags is None``): the images ``row_index`` of
    ``row_bags`` against each other, each unordered pair once (the row image
    comes first in ``row_index``); ask for ``col_max`` to get the reverse
    direction. Rectangular mode: every row image against every column image
    (of ``col_bags``, at ``col_index`` when given). ``maxima=False`` skips
    the row and column maxima (for ``mean_dist`` alone).

    ``workers`` caps the CPU threads of the kernel (default: one worker
    per available CPU, as the budget allows). The BLAS is limited to one
    thread in every path, so the kernel never runs more than ``workers``
    threads, and results do not depend on it (bitwise).

    ``progress(done, total)``, when given, is called with the image pairs
    done so far before the first task and after every task (``total``: :func:`n_pairs` of the call).
    """
    rows = np.arange(row_bags.shape[0]) if row_index is None else np.asarray(row_index, dtype=np.intp)
    symmetric = col_bags is None
    col_bags_ = row_bags if col_bags is None else col_bags
    if symmetric:
        cols = rows
    else:
        cols = np.arange(col_bags_.shape[0]) if col_index is None else np.asarray(col_index, dtype=np.intp)
    if rows.size == 0 or cols.size == 0:
        return
    m, m_col, d = row_bags.shape[1], col_bags_.shape[1], row_bags.shape[2]
    b, n_workers = plan_tasks(max(m, m_col), d, memory_mb, cols.size, cpus=workers)
    run = _Task(row_bags, col_bags_, b, maxima, col_max, mean_dist)
    tasks = _tasks(rows, cols, b, symmetric)
    work = _n_pairs(rows.size, cols.size, symmetric) * m * m_col * d
    pooled = n_workers > 1 and work >= INLINE_WORK
    if pooled and not _blas_controller().lib_controllers:
        logger.debug("no BLAS library that threadpoolctl can limit: kernel tasks run inline")
        pooled = False
    # Single-threaded BLAS in every path, inline too: a multi-threaded BLAS may
    # pick other kernels (other rounding) for the same product, and results
    # must not depend on the number of threads.
    results = _pooled(run, tasks, n_workers) if pooled else map(run, tasks)
    with limit_blas(1):
        if progress is not None:
            results = _reporting(results, progress, _n_pairs(rows.size, cols.size, symmetric))
        yield from results


def _reporting(results: Iterator[BlockResult], progress: Callable[[int, int], None], total: int) -> Iterator[BlockResult]:
    """``results``, calling ``progress(pairs done, total)`` before the first and after each."""
    done = 0
    progress(0, total)
    for res in results:
        done += res.rows.size * res.cols.size
        progress(done, total)
        yield res


def n_pairs(n_rows: int, n_cols: int, symmetric: bool) -> int:
    """Image pairs a :func:`block_reductions` call visits (the unit of its progress reports).

    Examples
    --------
    >>> n_pairs(4, 4, True), n_pairs(3, 5, False)
    (6, 15)
    """
    return _n_pairs(n_rows, n_cols, symmetric)


@contextlib.contextmanager
def limit_blas(n_threads: Optional[int]) -> Iterator[None]:
    """Cap the BLAS thread pools at ``n_threads`` inside the block (``None``: leave them alone)."""
    blas = _blas_controller() if n_threads is not None else None
    if blas is None or not blas.lib_controllers:
        yield
        return
    with _BLAS_LOCK, blas.limit(limits=n_threads):
        yield


def _pooled(run: _Task, tasks: Iterator["Tuple[np.ndarray, np.ndarray]"], n_workers: int) -> Iterator[BlockResult]:
    """Run tasks on ``n_workers`` threads, at most ``2 * n_workers`` in flight, yielding in task order."""
    window: "deque[Future[BlockResult]]" = deque()
    with ThreadPoolExecutor(n_workers, thread_name_prefix="anomclust-kernel") as pool:
        try:
            for task in tasks:
                window.append(pool.submit(run, task))
                if len(window) >= 2 * n_workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for fut in window:
                fut.cancel()


def sims_to_dists(sims: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Euclidean distance between unit vectors from their dot product.

    ``sqrt(max(0, 2 - 2 s))``, computed in float32 with the clamp applied
    before the square root; ``out`` may be ``sims`` itself (in place).
    """
    out = np.multiply(sims, -2.0, out=out, dtype=np.float32)
    out += 2.0
    np.maximum(out, 0.0, out=out)
    np.sqrt(out, out=out)
    return out


def n_tasks(n_rows: int, n_cols: int, b: int, symmetric: bool) -> int:
    """Number of tasks (for progress reports and tests)."""
    if symmetric:
        return sum(-(-(n_rows - 1 - p) // b) for p in range(n_rows))
    return n_rows * -(-n_cols // b)


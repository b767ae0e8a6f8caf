"""The blocked patch-similarity kernel shared by the scores and bag distances.

For unit vectors ``||a - b||^2 = 2 - 2 a.b``, so every patch min-distance
between two images is a matrix product followed by row/column maxima. The
kernel groups images into blocks, computes one Gram block ``Z_A Z_B^T`` per
unordered block pair with a single SGEMM, and hands it to a consumer, which
takes the row maxima (direction A -> B) and the column maxima (B -> A) of the
same block: every unordered image pair costs one ``M x M x D`` product.

Memory model: one Gram block of ``a*M x b*M`` float32 values, the gathered
float32 operands ``(a + b) * M * D`` and a few reductions of ``a*b*M`` values
stay within ``memory_mb``; the consumers' accumulators are O(N*M).
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

__all__ = ["GramBlock", "plan_block_images", "gram_blocks", "sims_to_dists", "block_bytes", "n_blocks"]

#: Upper bound on the patch rows of one side of a Gram block: beyond it the
#: row/column reductions fall out of cache and cost more than they save.
MAX_BLOCK_ROWS = 2400
_MIB = 1 << 20


def block_bytes(a: int, b: int, m: int, d: int) -> int:
    """Working bytes of one ``a``-by-``b`` image block (Gram + operands + reductions)."""
    gram = a * b * m * m * 4
    operands = (a + b) * m * d * 4
    reductions = 6 * a * b * m * 8
    return gram + operands + reductions


def plan_block_images(m: int, d: int, memory_mb: float, n_rows: int, n_cols: int) -> "tuple[int, int]":
    """Images per block side ``(a, b)`` fitting ``memory_mb``.

    Raises ``ValueError`` naming ``memory_mb`` when not even one image pair fits.
    """
    budget = memory_mb * _MIB
    need = block_bytes(1, 1, m, d)
    if need > budget:
        raise ValueError(
            f"memory_mb={memory_mb:g} is too small for images of M={m} patches of D={d} dims: "
            f"one image pair needs {need / _MIB:.3g} MiB; raise memory_mb"
        )
    cap = max(1, MAX_BLOCK_ROWS // m)
    a = min(cap, max(1, n_rows))
    b = min(cap, max(1, n_cols))
    while block_bytes(a, b, m, d) > budget:
        if a >= b and a > 1:
            a -= 1
        elif b > 1:
            b -= 1
        else:  # pragma: no cover - excluded by the check above
            break
    return a, b


@dataclass
class GramBlock:
    """One Gram block between row images ``rows`` and column images ``cols``.

    ``gram[a, m, b, n]`` is ``<z_{rows[a], m}, z_{cols[b], n}>``. ``diagonal``
    is true when rows and cols are the same images (symmetric mode): the block
    then covers the ordered pairs in both directions, and self-pairs, which
    the consumer must exclude. Otherwise the row and column images are
    disjoint, and in symmetric mode the consumer may use the column maxima
    for the reverse direction.
    """

    rows: np.ndarray
    cols: np.ndarray
    gram: np.ndarray
    diagonal: bool
    pool: Optional[Executor] = field(default=None, repr=False)

    def _split(self, func):  # type: ignore[no-untyped-def]
        """Apply ``func`` to row-image slices of the block in the pool (NumPy releases the GIL)."""
        a = self.gram.shape[0]
        if self.pool is None or a < 2:
            return [func(slice(0, a))]
        half = (a + 1) // 2
        return list(self.pool.map(func, (slice(0, half), slice(half, a))))

    def row_max(self) -> np.ndarray:
        """``(a, M, b)``: for each row patch, its best match in each column image."""
        parts = self._split(lambda sl: self.gram[sl].max(axis=3))
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def col_max(self) -> np.ndarray:
        """``(b, M, a)``: for each column patch, its best match in each row image."""
        parts = self._split(lambda sl: self.gram[sl].max(axis=1))
        both = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return both.transpose(1, 2, 0)

    def both_max(self) -> "tuple[np.ndarray, np.ndarray]":
        """``(row_max(), col_max())`` in one parallel pass over the block."""
        parts = self._split(lambda sl: (self.gram[sl].max(axis=3), self.gram[sl].max(axis=1)))
        rows = np.concatenate([p[0] for p in parts], axis=0)
        cols = np.concatenate([p[1] for p in parts], axis=0)
        return rows, cols.transpose(1, 2, 0)

    def self_mask(self) -> Optional[np.ndarray]:
        """``(a, b)`` boolean mask of self-pairs, or ``None`` when there are none."""
        if not self.diagonal:
            return None
        return self.rows[:, None] == self.cols[None, :]


def _gather(bags: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Float32 ``(len(idx) * M, D)`` operand; a view when possible."""
    if idx.size and idx[-1] - idx[0] + 1 == idx.size and np.all(np.diff(idx) == 1):
        part = bags[idx[0] : idx[-1] + 1]
    else:
        part = bags[idx]
    part = part.astype(np.float32, copy=False)
    return part.reshape(-1, bags.shape[2])


def gram_blocks(
    row_bags: np.ndarray,
    col_bags: Optional[np.ndarray] = None,
    *,
    memory_mb: float,
    row_index: Optional[np.ndarray] = None,
    col_index: Optional[np.ndarray] = None,
) -> Iterator[GramBlock]:
    """Yield the Gram blocks needed for all image pairs.

    Symmetric mode (``col_bags is None``): the images ``row_index`` of
    ``row_bags`` against themselves, one block per unordered block pair
    (``diagonal`` blocks included). Rectangular mode: every row image against
    every column image (of ``col_bags``, or of ``row_bags`` at ``col_index``
    when given with ``col_bags is row_bags``).

    The yielded ``gram`` is a view into a reused buffer: consume it before
    advancing the iterator.
    """
    n_rows_total, m, d = row_bags.shape
    rows = np.arange(n_rows_total) if row_index is None else np.asarray(row_index, dtype=np.intp)
    symmetric = col_bags is None
    if symmetric:
        col_bags_ = row_bags
        cols = rows
    else:
        col_bags_ = col_bags
        cols = np.arange(col_bags.shape[0]) if col_index is None else np.asarray(col_index, dtype=np.intp)
    m_col = col_bags_.shape[1]
    if rows.size == 0 or cols.size == 0:
        return
    # Plan with the larger patch count so both shapes are covered.
    mm = max(m, m_col)
    a, b = plan_block_images(mm, d, memory_mb, rows.size, cols.size)
    if symmetric:
        a = b = min(a, b)
    buffer = np.empty(a * m * b * m_col, dtype=np.float32)
    # Two threads split each block's reductions by row images (NumPy releases the GIL).
    threads = min(2, os.cpu_count() or 1)
    pool_ctx = ThreadPoolExecutor(threads) if threads > 1 and a > 1 else contextlib.nullcontext(None)
    with pool_ctx as pool:
        for r0 in range(0, rows.size, a):
            ridx = rows[r0 : r0 + a]
            xa = _gather(row_bags, ridx)
            for c0 in range(r0 if symmetric else 0, cols.size, b):
                cidx = cols[c0 : c0 + b]
                diagonal = symmetric and c0 == r0
                xb = xa if diagonal else _gather(col_bags_, cidx)
                out = buffer[: xa.shape[0] * xb.shape[0]].reshape(xa.shape[0], xb.shape[0])
                np.matmul(xa, xb.T, out=out)
                yield GramBlock(
                    rows=ridx,
                    cols=cidx,
                    gram=out.reshape(ridx.size, m, cidx.size, m_col),
                    diagonal=diagonal,
                    pool=pool,
                )


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


def n_blocks(n: int, images_per_block: int) -> int:
    """Number of unordered block pairs in symmetric mode (for progress reports)."""
    k = math.ceil(n / images_per_block)
    return k * (k + 1) // 2

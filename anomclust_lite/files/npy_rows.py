"""An ``.npy`` file written row by row, then read back as a read-only memory map.

The extractor fills ``(N, M, D)`` bags one image at a time. Writing them
through a writable memory map would keep every page written resident in the
process (and counted in its memory) until the map is closed; writing each row
with ``pwrite`` leaves them to the page cache, which the system can write back
and reclaim. Reading back, :meth:`NpyRows.read_only` maps only the rows kept,
as one whole mapping (what :func:`anomclust_lite.estimator.scale.rows_of`
reads through short mappings of its own).
"""

from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np

__all__ = ["NpyRows"]

PathLike = Union[str, "os.PathLike[str]"]


class NpyRows:
    """``(N, *row_shape)`` rows of ``dtype`` in a new ``.npy`` file at ``path`` (created or truncated).

    Supports what a row-filling writer needs: ``rows[i] = row``, ``rows[i]``
    (a copy of row ``i``), ``len``, ``shape``, ``dtype``, and ``rows[:k]``,
    which finishes writing and returns the first ``k`` rows as a read-only
    :class:`numpy.memmap`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.npy"
    >>> rows = NpyRows(path, (3, 2), np.float32)
    >>> rows[2] = [5, 6]; rows[0] = [1, 2]; rows[1] = rows[2]
    >>> rows[:2].tolist()
    [[1.0, 2.0], [5.0, 6.0]]
    """

    def __init__(self, path: PathLike, shape: Tuple[int, ...], dtype: "np.dtype | type") -> None:
        self.path = os.fspath(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
        self._offset = int(header.offset)
        del header  # sized file and header written; no page of the data mapped
        self._row_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self._row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd: "int | None" = None
        self._fd = os.open(self.path, os.O_RDWR)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _position(self, i: int) -> int:
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"row {i} is outside 0..{self.shape[0] - 1}")
        if self._fd is None:
            raise ValueError(f"{self.path!r} is finished; it is read-only now")
        return self._offset + i * self._row_bytes

    def __setitem__(self, i: int, row: object) -> None:
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(row, dtype=self.dtype), self._row_shape)).tobytes()
        os.pwrite(self._fd, data, self._position(int(i)))  # type: ignore[arg-type]

    def __getitem__(self, key: "int | slice") -> np.ndarray:
        if isinstance(key, slice):
            if key.start not in (None, 0) or key.step not in (None, 1) or key.stop is None:
                raise ValueError("only rows[:k] is supported")
            return self.read_only(int(key.stop))
        raw = os.pread(self._fd, self._row_bytes, self._position(int(key)))  # type: ignore[arg-type]
        return np.frombuffer(raw, dtype=self.dtype).reshape(self._row_shape).copy()

    def close(self) -> None:
        """Finish writing (idempotent; also on garbage collection)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def read_only(self, k: int) -> np.ndarray:
        """Finish writing; the first ``k`` rows as a read-only memory map (an empty array for ``k = 0``)."""
        self.close()
        k = min(max(int(k), 0), self.shape[0])
        if k == 0:
            return np.empty((0,) + self._row_shape, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=(k,) + self._row_shape)

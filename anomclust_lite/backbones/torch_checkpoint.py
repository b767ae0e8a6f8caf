"""Read the tensors of a PyTorch ``torch.save`` checkpoint without torch.

:func:`load_state_dict` returns a checkpoint's ``name -> array`` mapping as
NumPy arrays. It reads both on-disk formats of ``torch.save``:

* the **zip format** (torch >= 1.6): a zip archive holding
  ``<archive>/data.pkl`` (the pickled object, tensors replaced by persistent
  ids), one raw record ``<archive>/data/<key>`` per storage, and optionally
  ``<archive>/byteorder`` (``little`` or ``big``; little-endian when absent);
* the **legacy format** (torch < 1.6): a stream of pickles -- magic number,
  protocol version, system info, the object itself, the sorted list of storage
  keys -- followed by each storage as an 8-byte little-endian element count
  and its little-endian bytes.

The pickle data are read by the restricted, data-only unpickler of
:mod:`~anomclust_lite.backbones.torch_unpickle` (why pickle appears here, and
what it admits, is explained there); tensors are rebuilt with NumPy from the
storage bytes after checking that every view lies inside its storage.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "not_a_checkpoint.pth"
>>> _ = path.write_bytes(b"hello")
>>> try:
...     load_state_dict(path)
... except ValueError:
...     print("refused")
refused
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import numpy as np

from ..files.safe_open import UnsafeFileError, open_regular
from .torch_unpickle import CorruptCheckpoint, Storage, StorageType, TensorRef, UnsafeCheckpointError, unpickle

__all__ = ["UnsafeCheckpointError", "load_state_dict"]

logger = logging.getLogger(__name__)

#: Largest checkpoint file read (8 GiB; WRN-50-2's is 263 MB).
MAX_CHECKPOINT_BYTES = 8 << 30

#: First pickle of a legacy-format file (``torch.serialization.MAGIC_NUMBER``).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Second pickle of a legacy-format file (``torch.serialization.PROTOCOL_VERSION``).
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------


def _storage_array(raw: bytes, stype: StorageType, numel: int, byteorder: str) -> np.ndarray:
    dtype = np.dtype(stype.code).newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) != numel * dtype.itemsize:
        raise CorruptCheckpoint(
            f"storage holds {len(raw)} bytes but {numel} x {dtype.itemsize} = {numel * dtype.itemsize} were declared"
        )
    return np.frombuffer(raw, dtype=dtype)


def _check_declared_sizes(zf: zipfile.ZipFile, archive_size: int) -> None:
    """torch stores records uncompressed: a record declaring more bytes than the file is a zip bomb."""
    for info in zf.infolist():
        if info.file_size > archive_size:
            raise CorruptCheckpoint(
                f"record {info.filename[:80]!r} declares {info.file_size} bytes, more than the whole file "
                f"({archive_size} bytes); refused before decompressing"
            )


def _read_zip(path: Path) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Storage]]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CorruptCheckpoint(f"broken zip archive ({exc})") from None
    with zf:
        _check_declared_sizes(zf, os.path.getsize(path))
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CorruptCheckpoint(
                "zip archive has no '<archive>/data.pkl' record" if not pkl else "zip archive has several data.pkl records"
            )
        prefix = pkl[0][: -len("data.pkl")]
        names = set(zf.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CorruptCheckpoint(f"unknown byteorder record {byteorder!r:.20}")
        storages: Dict[str, Storage] = {}
        obj = unpickle(io.BytesIO(zf.read(pkl[0])), storages=storages, legacy=False)
        data: Dict[str, np.ndarray] = {}
        for key, st in storages.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                raise CorruptCheckpoint(f"zip archive lacks the storage record {name!r}")
            expected = st.numel * np.dtype(st.stype.code).itemsize
            if zf.getinfo(name).file_size != expected:
                raise CorruptCheckpoint(
                    f"storage record {name!r} holds {zf.getinfo(name).file_size} bytes; {expected} were declared"
                )
            data[key] = _storage_array(zf.read(name), st.stype, st.numel, byteorder)
    return obj, data, storages


def _read_legacy(path: Path) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, Storage]]:
    with open_regular(path, MAX_CHECKPOINT_BYTES) as f:
        file_size = os.fstat(f.fileno()).st_size
        magic = unpickle(f)
        if magic != _LEGACY_MAGIC_NUMBER:
            raise CorruptCheckpoint("bad magic number (a pickle, but not one written by torch.save)")
        version = unpickle(f)
        if version != _LEGACY_PROTOCOL_VERSION:
            raise CorruptCheckpoint(f"unsupported legacy protocol version {version!r:.40}")
        sys_info = unpickle(f)
        if not isinstance(sys_info, dict):
            raise CorruptCheckpoint("malformed system-info record")
        storages: Dict[str, Storage] = {}
        obj = unpickle(f, storages=storages, legacy=True)
        keys = unpickle(f)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise CorruptCheckpoint("malformed storage key list")
        if set(keys) != set(storages) or len(keys) != len(storages):
            raise CorruptCheckpoint("storage key list does not match the storages the tensors use")
        data: Dict[str, np.ndarray] = {}
        for key in keys:
            st = storages[key]
            head = f.read(8)
            if len(head) != 8:
                raise CorruptCheckpoint(f"file ends before storage {key!r}")
            (count,) = struct.unpack("<q", head)
            if count != st.numel:
                raise CorruptCheckpoint(f"storage {key!r} holds {count} elements but {st.numel} were declared")
            nbytes = count * np.dtype(st.stype.code).itemsize
            if nbytes > file_size - f.tell():
                raise CorruptCheckpoint(f"file ends inside storage {key!r} (truncated?)")
            data[key] = _storage_array(f.read(nbytes), st.stype, count, "little")
    return obj, data, storages


def _materialise(ref: TensorRef, data: Dict[str, np.ndarray]) -> np.ndarray:
    st = ref.storage
    flat = data[st.key][st.view_offset : st.view_offset + st.numel]
    numel = int(np.prod(ref.size, dtype=object)) if ref.size else 1
    if numel > max(flat.size, 1):
        # Only possible with overlapping (e.g. stride-0) views; copying those
        # could make a tiny file expand into an unbounded amount of memory.
        raise CorruptCheckpoint(
            f"tensor of size {ref.size} has more elements ({numel}) than its storage ({flat.size}); "
            "overlapping views are not supported"
        )
    if numel == 0:
        out = np.empty(ref.size, dtype=flat.dtype.newbyteorder("="))
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= flat.size:
            raise CorruptCheckpoint(
                f"tensor view (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
                f"reaches element {last} of a storage of {flat.size} elements"
            )
        base = flat[ref.offset :]
        view = np.lib.stride_tricks.as_strided(
            base, shape=ref.size, strides=tuple(s * base.itemsize for s in ref.stride), writeable=False
        )
        out = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)
    if st.stype.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def load_state_dict(path: PathLike) -> Dict[str, np.ndarray]:
    """Read the tensors of a ``torch.save`` checkpoint as NumPy arrays.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save`` (zip or legacy format) whose object
        is a ``dict``/``OrderedDict`` of name -> tensor, such as a module's
        ``state_dict()``. If the top level is a dict holding a dict under
        ``"state_dict"`` (a common training-checkpoint layout), that inner
        dict is returned and the other top-level entries are ignored.

    Returns
    -------
    dict of str -> numpy.ndarray
        Each tensor as a C-contiguous, native-byte-order array with the
        tensor's shape (``()`` for scalars) and dtype (float64, float32,
        float16, int64, int32, int16, int8, uint8 or bool; bfloat16 is
        returned as float32). Device tags (``cpu``, ``cuda:0``) are ignored.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnsafeCheckpointError
        The pickle names any global outside the tensor allow-list (for
        example ``os.system``); nothing it names is ever called.
    ValueError
        The file is not a torch checkpoint, is truncated or corrupt, or
        holds something other than a dict of tensors.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "empty.pth"
    >>> _ = bad.write_bytes(b"")
    >>> load_state_dict(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: path ... is not a torch checkpoint: the file is empty
    """
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"path {str(p)!r} does not exist; pass the checkpoint file written by torch.save")
    if not p.is_file():
        raise ValueError(f"path {str(p)!r} is not a regular file; pass the checkpoint file written by torch.save")
    try:
        with open_regular(p, MAX_CHECKPOINT_BYTES) as f:
            head = f.read(512)
    except UnsafeFileError as exc:
        raise ValueError(f"path {str(p)!r} cannot be used as a torch checkpoint: {exc.reason}") from None
    if not head:
        raise ValueError(f"path {str(p)!r} is not a torch checkpoint: the file is empty")
    try:
        if head.startswith(_ZIP_MAGIC):
            obj, data, storages = _read_zip(p)
        elif head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
            obj, data, storages = _read_legacy(p)
        elif len(head) >= 262 and head[257:262] == b"ustar":
            raise CorruptCheckpoint(
                "it is in torch's pre-0.4 tar format, which is not supported; re-save it with a newer torch"
            )
        else:
            raise CorruptCheckpoint("it is neither a torch zip checkpoint nor a legacy torch pickle")
        result = _to_arrays(obj, data)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{exc} (path {str(p)!r})") from None
    except CorruptCheckpoint as exc:
        raise ValueError(f"path {str(p)!r} is not a readable torch checkpoint: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        OverflowError,
        UnicodeDecodeError,
        zipfile.BadZipFile,
        struct.error,
        RecursionError,
        MemoryError,
    ) as exc:
        raise ValueError(
            f"path {str(p)!r} is not a readable torch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    logger.debug("read %d tensors from %s (%d storages)", len(result), p, len(storages))
    return result


def _to_arrays(obj: Any, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise CorruptCheckpoint(f"it holds a {type(obj).__name__}, not a dict of tensors (a state_dict)")
    inner = obj.get("state_dict")
    if isinstance(inner, dict):
        obj = inner
    out: Dict[str, np.ndarray] = {}
    bad: List[str] = []
    # Tensors may share storages (tied weights), but the arrays returned must
    # stay within a small multiple of the data actually in the file.
    budget = 4 * sum(a.nbytes for a in data.values()) + (1 << 20)
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CorruptCheckpoint(f"state_dict key {name!r:.60} is not a string")
        if not isinstance(value, TensorRef):
            bad.append(f"{name!r} ({type(value).__name__})")
            continue
        out[name] = _materialise(value, data)
        budget -= out[name].nbytes
        if budget < 0:
            raise CorruptCheckpoint("its tensors reuse the same storages so often that they exceed 4x the file's data")
    if bad:
        raise CorruptCheckpoint(
            "state_dict entries must all be tensors; these are not: " + ", ".join(bad[:5])
            + (" ..." if len(bad) > 5 else "")
        )
    return out

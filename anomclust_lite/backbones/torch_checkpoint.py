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

Why the :mod:`pickle` module appears here
-----------------------------------------
The rest of the library never uses pickle. torch's checkpoints *are* pickles,
so this module is the one place that reads pickle data, and it does so with
a **restricted, data-only unpickler**: ``find_class`` admits only
``collections.OrderedDict``, ``set``/``frozenset``, torch's tensor
rebuild functions (replaced by local functions that merely record offset,
size and stride) and the storage class names (replaced by inert markers).
Every other global -- ``os.system``, ``builtins.eval``, ``subprocess.Popen``,
any class -- raises :class:`UnsafeCheckpointError` *when its name is read*,
before anything could call it. The unrestricted module-level loaders of pickle are never
called. Tensors are rebuilt with NumPy from the storage bytes after checking
that every view lies inside its storage.

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

import collections
import io
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["UnsafeCheckpointError", "load_state_dict"]

logger = logging.getLogger(__name__)

#: First pickle of a legacy-format file (``torch.serialization.MAGIC_NUMBER``).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Second pickle of a legacy-format file (``torch.serialization.PROTOCOL_VERSION``).
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

#: torch storage class name -> NumPy element type (without byte order).
#: ``BFloat16Storage`` is read as ``u2`` and widened to float32 by hand.
_STORAGE_DTYPES: Dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
    "UntypedStorage": "u1",
}
#: Modules under which torch pickles its storage classes (``torch.cuda`` for
#: legacy checkpoints saved from a GPU; ``torch.storage`` for UntypedStorage).
_STORAGE_MODULES = ("torch", "torch.cuda", "torch.storage")

PathLike = Union[str, "os.PathLike[str]"]


class UnsafeCheckpointError(ValueError):
    """A checkpoint asked for something other than tensor data.

    Raised when its pickle names a global outside the small allow-list (for
    example ``os.system``) or uses another object-building feature; the
    global is refused when read and never called.
    """


class _CorruptCheckpoint(Exception):
    """Internal: the checkpoint's structure is not what torch writes."""


# ---------------------------------------------------------------------------
# Inert stand-ins for torch objects. They refuse pickle's BUILD opcode
# (``__setstate__``) so a crafted pickle cannot rewrite their fields.
# ---------------------------------------------------------------------------


class _Inert:
    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise UnsafeCheckpointError(
            f"refusing to set state on {type(self).__name__} from checkpoint: only tensor data is allowed"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise UnsafeCheckpointError(f"refusing to modify {type(self).__name__}.{name} from checkpoint")

    def _init(self, **fields: object) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)


class _StorageType(_Inert):
    """Marker returned for ``torch.FloatStorage`` and friends."""

    __slots__ = ("name", "code")

    def __init__(self, name: str) -> None:
        self._init(name=name, code=_STORAGE_DTYPES[name])


class _Storage(_Inert):
    """A storage named in the pickle; its bytes are attached later by key."""

    __slots__ = ("key", "stype", "numel", "view_offset")

    def __init__(self, key: str, stype: _StorageType, numel: int, view_offset: int = 0) -> None:
        self._init(key=key, stype=stype, numel=numel, view_offset=view_offset)


class _TensorRef(_Inert):
    """A tensor view ``(storage, offset, size, stride)``, materialised at the end."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self._init(storage=storage, offset=offset, size=size, stride=stride)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: object, what: str) -> Tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in x):
        raise _CorruptCheckpoint(f"tensor {what} must be a tuple of non-negative ints; got {x!r:.80}")
    return tuple(int(v) for v in x)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor``: records the view only."""
    if not isinstance(storage, _Storage):
        raise _CorruptCheckpoint(f"tensor storage must come from a persistent id; got {type(storage).__name__}")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise _CorruptCheckpoint(f"tensor storage offset must be a non-negative int; got {storage_offset!r:.80}")
    size_t = _int_tuple(size, "size")
    stride_t = _int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise _CorruptCheckpoint(f"tensor size {size_t} and stride {stride_t} differ in length")
    return _TensorRef(storage, int(storage_offset), size_t, stride_t)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (grad flags ignored)."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    if not isinstance(data, _TensorRef):
        raise _CorruptCheckpoint(f"parameter data must be a tensor; got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter_with_state`` (state ignored)."""
    return _rebuild_parameter(data)


#: The only callables a checkpoint may name, keyed by (module, name) as written
#: in the pickle (protocol-2 pickles spell ``builtins`` as ``__builtin__``).
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only containers, numbers, strings and tensor views.

    ``storages`` collects the storages named by persistent ids (by key); when
    it is ``None`` any persistent id is refused.
    """

    def __init__(self, file: BinaryIO, *, storages: Optional[Dict[str, _Storage]], legacy: bool) -> None:
        super().__init__(file)
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle hook
        key = (str(module), str(name))
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        if key[0] in _STORAGE_MODULES and key[1] in _STORAGE_DTYPES:
            return _StorageType(key[1])
        raise UnsafeCheckpointError(
            f"refusing to load global '{key[0][:100]}.{key[1][:100]}' from checkpoint: "
            "only tensor data is allowed"
        )

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle hook
        if self._storages is None:
            raise _CorruptCheckpoint("unexpected persistent id outside the main pickle")
        if not isinstance(pid, tuple) or not pid:
            raise _CorruptCheckpoint(f"persistent id must be a non-empty tuple; got {pid!r:.80}")
        typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if typename == "module":
            raise UnsafeCheckpointError(
                "refusing to load a pickled module class from checkpoint: only tensor data is allowed"
            )
        if typename != "storage":
            raise _CorruptCheckpoint(f"unknown persistent id type {typename!r:.40}")
        expected = 6 if self._legacy else 5
        if len(pid) != expected:
            raise _CorruptCheckpoint(f"storage persistent id must have {expected} fields; got {len(pid)}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType):
            raise _CorruptCheckpoint(f"storage type must be a torch storage class; got {type(stype).__name__}")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise _CorruptCheckpoint(f"malformed storage persistent id {pid!r:.120}")
        root = self._storages.get(key)
        if root is None:
            root = _Storage(key, stype, int(numel))
            self._storages[key] = root
        elif root.stype.code != stype.code or root.numel != numel:
            raise _CorruptCheckpoint(f"storage {key!r} is declared twice with different type or size")
        view = pid[5] if self._legacy else None
        if view is None:
            return root
        if (
            not isinstance(view, tuple)
            or len(view) != 3
            or not _is_int(view[1])
            or not _is_int(view[2])
            or view[1] < 0
            or view[2] < 0
            or view[1] + view[2] > root.numel
        ):
            raise _CorruptCheckpoint(f"malformed storage view {view!r:.120} of storage {key!r}")
        return _Storage(key, stype, int(view[2]), view_offset=int(view[1]))


def _unpickle(file: BinaryIO, *, storages: Optional[Dict[str, _Storage]] = None, legacy: bool = False) -> Any:
    return _RestrictedUnpickler(file, storages=storages, legacy=legacy).load()


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------


def _storage_array(raw: bytes, stype: _StorageType, numel: int, byteorder: str) -> np.ndarray:
    dtype = np.dtype(stype.code).newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) != numel * dtype.itemsize:
        raise _CorruptCheckpoint(
            f"storage holds {len(raw)} bytes but {numel} x {dtype.itemsize} = {numel * dtype.itemsize} were declared"
        )
    return np.frombuffer(raw, dtype=dtype)


def _read_zip(path: Path) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, _Storage]]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _CorruptCheckpoint(f"broken zip archive ({exc})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise _CorruptCheckpoint(
                "zip archive has no '<archive>/data.pkl' record" if not pkl else "zip archive has several data.pkl records"
            )
        prefix = pkl[0][: -len("data.pkl")]
        names = set(zf.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise _CorruptCheckpoint(f"unknown byteorder record {byteorder!r:.20}")
        storages: Dict[str, _Storage] = {}
        obj = _unpickle(io.BytesIO(zf.read(pkl[0])), storages=storages, legacy=False)
        data: Dict[str, np.ndarray] = {}
        for key, st in storages.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                raise _CorruptCheckpoint(f"zip archive lacks the storage record {name!r}")
            expected = st.numel * np.dtype(st.stype.code).itemsize
            if zf.getinfo(name).file_size != expected:
                raise _CorruptCheckpoint(
                    f"storage record {name!r} holds {zf.getinfo(name).file_size} bytes; {expected} were declared"
                )
            data[key] = _storage_array(zf.read(name), st.stype, st.numel, byteorder)
    return obj, data, storages


def _read_legacy(path: Path) -> Tuple[Any, Dict[str, np.ndarray], Dict[str, _Storage]]:
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        magic = _unpickle(f)
        if magic != _LEGACY_MAGIC_NUMBER:
            raise _CorruptCheckpoint("bad magic number (a pickle, but not one written by torch.save)")
        version = _unpickle(f)
        if version != _LEGACY_PROTOCOL_VERSION:
            raise _CorruptCheckpoint(f"unsupported legacy protocol version {version!r:.40}")
        sys_info = _unpickle(f)
        if not isinstance(sys_info, dict):
            raise _CorruptCheckpoint("malformed system-info record")
        storages: Dict[str, _Storage] = {}
        obj = _unpickle(f, storages=storages, legacy=True)
        keys = _unpickle(f)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _CorruptCheckpoint("malformed storage key list")
        if set(keys) != set(storages) or len(keys) != len(storages):
            raise _CorruptCheckpoint("storage key list does not match the storages the tensors use")
        data: Dict[str, np.ndarray] = {}
        for key in keys:
            st = storages[key]
            head = f.read(8)
            if len(head) != 8:
                raise _CorruptCheckpoint(f"file ends before storage {key!r}")
            (count,) = struct.unpack("<q", head)
            if count != st.numel:
                raise _CorruptCheckpoint(f"storage {key!r} holds {count} elements but {st.numel} were declared")
            nbytes = count * np.dtype(st.stype.code).itemsize
            if nbytes > file_size - f.tell():
                raise _CorruptCheckpoint(f"file ends inside storage {key!r} (truncated?)")
            data[key] = _storage_array(f.read(nbytes), st.stype, count, "little")
    return obj, data, storages


def _materialise(ref: _TensorRef, data: Dict[str, np.ndarray]) -> np.ndarray:
    st = ref.storage
    flat = data[st.key][st.view_offset : st.view_offset + st.numel]
    numel = int(np.prod(ref.size, dtype=object)) if ref.size else 1
    if numel > max(flat.size, 1):
        # Only possible with overlapping (e.g. stride-0) views; copying those
        # could make a tiny file expand into an unbounded amount of memory.
        raise _CorruptCheckpoint(
            f"tensor of size {ref.size} has more elements ({numel}) than its storage ({flat.size}); "
            "overlapping views are not supported"
        )
    if numel == 0:
        out = np.empty(ref.size, dtype=flat.dtype.newbyteorder("="))
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= flat.size:
            raise _CorruptCheckpoint(
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
    with open(p, "rb") as f:
        head = f.read(512)
    if not head:
        raise ValueError(f"path {str(p)!r} is not a torch checkpoint: the file is empty")
    try:
        if head.startswith(_ZIP_MAGIC):
            obj, data, storages = _read_zip(p)
        elif head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
            obj, data, storages = _read_legacy(p)
        elif len(head) >= 262 and head[257:262] == b"ustar":
            raise _CorruptCheckpoint(
                "it is in torch's pre-0.4 tar format, which is not supported; re-save it with a newer torch"
            )
        else:
            raise _CorruptCheckpoint("it is neither a torch zip checkpoint nor a legacy torch pickle")
        result = _to_arrays(obj, data)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{exc} (path {str(p)!r})") from None
    except _CorruptCheckpoint as exc:
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
    ) as exc:
        raise ValueError(
            f"path {str(p)!r} is not a readable torch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    logger.debug("read %d tensors from %s (%d storages)", len(result), p, len(storages))
    return result


def _to_arrays(obj: Any, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise _CorruptCheckpoint(f"it holds a {type(obj).__name__}, not a dict of tensors (a state_dict)")
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
            raise _CorruptCheckpoint(f"state_dict key {name!r:.60} is not a string")
        if not isinstance(value, _TensorRef):
            bad.append(f"{name!r} ({type(value).__name__})")
            continue
        out[name] = _materialise(value, data)
        budget -= out[name].nbytes
        if budget < 0:
            raise _CorruptCheckpoint("its tensors reuse the same storages so often that they exceed 4x the file's data")
    if bad:
        raise _CorruptCheckpoint(
            "state_dict entries must all be tensors; these are not: " + ", ".join(bad[:5])
            + (" ..." if len(bad) > 5 else "")
        )
    return out

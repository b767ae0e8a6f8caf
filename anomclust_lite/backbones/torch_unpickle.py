"""The restricted, data-only unpickler behind :mod:`~anomclust_lite.backbones.torch_checkpoint`.

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
called. The unpickled object holds :class:`TensorRef` views
``(storage, offset, size, stride)``; the caller rebuilds them with NumPy from
the storage bytes after checking that every view lies inside its storage.

Examples
--------
>>> import io, pickle
>>> unpickle(io.BytesIO(pickle.dumps({"a": [1, 2]})))
{'a': [1, 2]}
>>> unpickle(io.BytesIO(pickle.dumps(print)))
Traceback (most recent call last):
...
anomclust_lite.backbones.torch_unpickle.UnsafeCheckpointError: refusing to load global 'builtins.print' from checkpoint: only tensor data is allowed
"""

from __future__ import annotations

import collections
import pickle
from typing import Any, BinaryIO, Callable, Dict, Optional, Tuple

__all__ = [
    "UnsafeCheckpointError",
    "CorruptCheckpoint",
    "StorageType",
    "Storage",
    "TensorRef",
    "unpickle",
]


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


class UnsafeCheckpointError(ValueError):
    """A checkpoint asked for something other than tensor data.

    Raised when its pickle names a global outside the small allow-list (for
    example ``os.system``) or uses another object-building feature; the
    global is refused when read and never called.
    """


class CorruptCheckpoint(Exception):
    """The checkpoint's structure is not what torch writes."""


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


class StorageType(_Inert):
    """Marker returned for ``torch.FloatStorage`` and friends."""

    __slots__ = ("name", "code")

    def __init__(self, name: str) -> None:
        self._init(name=name, code=_STORAGE_DTYPES[name])


class Storage(_Inert):
    """A storage named in the pickle; its bytes are attached later by key."""

    __slots__ = ("key", "stype", "numel", "view_offset")

    def __init__(self, key: str, stype: StorageType, numel: int, view_offset: int = 0) -> None:
        self._init(key=key, stype=stype, numel=numel, view_offset=view_offset)


class TensorRef(_Inert):
    """A tensor view ``(storage, offset, size, stride)``, materialised at the end."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Storage, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> None:
        self._init(storage=storage, offset=offset, size=size, stride=stride)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: object, what: str) -> Tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(_is_int(v) and v >= 0 for v in x):
        raise CorruptCheckpoint(f"tensor {what} must be a tuple of non-negative ints; got {x!r:.80}")
    return tuple(int(v) for v in x)


def _rebuild_tensor(storage: object, storage_offset: object, size: object, stride: object) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor``: records the view only."""
    if not isinstance(storage, Storage):
        raise CorruptCheckpoint(f"tensor storage must come from a persistent id; got {type(storage).__name__}")
    if not _is_int(storage_offset) or storage_offset < 0:
        raise CorruptCheckpoint(f"tensor storage offset must be a non-negative int; got {storage_offset!r:.80}")
    size_t = _int_tuple(size, "size")
    stride_t = _int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise CorruptCheckpoint(f"tensor size {size_t} and stride {stride_t} differ in length")
    return TensorRef(storage, int(storage_offset), size_t, stride_t)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (grad flags ignored)."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    if not isinstance(data, TensorRef):
        raise CorruptCheckpoint(f"parameter data must be a tensor; got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> TensorRef:
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

    def __init__(self, file: BinaryIO, *, storages: Optional[Dict[str, Storage]], legacy: bool) -> None:
        super().__init__(file)
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle hook
        key = (str(module), str(name))
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        if key[0] in _STORAGE_MODULES and key[1] in _STORAGE_DTYPES:
            return StorageType(key[1])
        raise UnsafeCheckpointError(
            f"refusing to load global '{key[0][:100]}.{key[1][:100]}' from checkpoint: "
            "only tensor data is allowed"
        )

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle hook
        if self._storages is None:
            raise CorruptCheckpoint("unexpected persistent id outside the main pickle")
        if not isinstance(pid, tuple) or not pid:
            raise CorruptCheckpoint(f"persistent id must be a non-empty tuple; got {pid!r:.80}")
        typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if typename == "module":
            raise UnsafeCheckpointError(
                "refusing to load a pickled module class from checkpoint: only tensor data is allowed"
            )
        if typename != "storage":
            raise CorruptCheckpoint(f"unknown persistent id type {typename!r:.40}")
        expected = 6 if self._legacy else 5
        if len(pid) != expected:
            raise CorruptCheckpoint(f"storage persistent id must have {expected} fields; got {len(pid)}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, StorageType):
            raise CorruptCheckpoint(f"storage type must be a torch storage class; got {type(stype).__name__}")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise CorruptCheckpoint(f"malformed storage persistent id {pid!r:.120}")
        root = self._storages.get(key)
        if root is None:
            root = Storage(key, stype, int(numel))
            self._storages[key] = root
        elif root.stype.code != stype.code or root.numel != numel:
            raise CorruptCheckpoint(f"storage {key!r} is declared twice with different type or size")
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
            raise CorruptCheckpoint(f"malformed storage view {view!r:.120} of storage {key!r}")
        return Storage(key, stype, int(view[2]), view_offset=int(view[1]))


def unpickle(file: BinaryIO, *, storages: Optional[Dict[str, Storage]] = None, legacy: bool = False) -> Any:
    return _RestrictedUnpickler(file, storages=storages, legacy=legacy).load()


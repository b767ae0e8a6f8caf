"""Reading an ``.npz`` of known members, checking everything that can be checked before decompressing.

:func:`read_npz_checked` opens the file through
:mod:`~anomclust_lite.files.safe_open` (a regular file of at most
``max_bytes``), then, before decompressing any array data:

- the member names must be exactly ``<name>.npy`` for the expected names
  (no extra, missing or duplicate member, no folder, no other name);
- the declared uncompressed sizes must add up to at most ``max_bytes``
  (Python's zipfile never decompresses past a member's declared size);
- each member's ``.npy`` header (the first few hundred bytes) must declare the
  expected dtype, C order, and a shape whose byte count is exactly the
  member's declared size minus the header.

Only then are the arrays read (no pickle).
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Dict, Mapping, Sequence, Union

import numpy as np

from .safe_open import open_regular

__all__ = ["NpzRefused", "read_npz_checked"]

PathLike = Union[str, "os.PathLike[str]"]

_HEADER_LIMIT = 10_000  # bytes of .npy header read at most (NumPy's own default limit)


class NpzRefused(ValueError):
    """The .npz was refused before decompression; the message names the member."""


def _check_members(zf: zipfile.ZipFile, dtypes: Mapping[str, "np.dtype"], max_bytes: int,
                   optional: Sequence[str] = ()) -> None:
    infos = zf.infolist()
    names = [info.filename for info in infos]
    present = set(names)
    expected = sorted(f"{name}.npy" for name in dtypes if name not in optional or f"{name}.npy" in present)
    if sorted(names) != expected:
        extra = sorted(set(names) - set(expected)) or ([n for n in names if names.count(n) > 1][:1])
        missing = sorted(set(expected) - set(names))
        shown = ", ".join(repr(n[:60]) for n in extra[:3])
        raise NpzRefused(
            f"{len(names)} members; unexpected: {shown or 'none'}; missing: {', '.join(missing) or 'none'}"
        )
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise NpzRefused(f"members declare {total} bytes once decompressed, more than the limit of {max_bytes}")


def _read_npy_header(fh, name: str):
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=_HEADER_LIMIT)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=_HEADER_LIMIT)
    else:
        raise NpzRefused(f"member {name!r} has .npy format version {version}")
    return tuple(shape), fortran, dtype


def _checked_array(zf: zipfile.ZipFile, name: str, dtype: "np.dtype") -> np.ndarray:
    info = zf.getinfo(f"{name}.npy")
    with zf.open(info) as fh:
        try:
            shape, fortran, found = _read_npy_header(fh, name)
        except NpzRefused:
            raise
        except Exception as exc:  # a damaged header: ValueError, SyntaxError, ...
            raise NpzRefused(f"member {name!r} has an unreadable .npy header ({type(exc).__name__})") from None
        if found != np.dtype(dtype) or fortran:
            raise NpzRefused(f"member {name!r} has dtype {found} (order {'F' if fortran else 'C'}), expected {np.dtype(dtype)}")
        nbytes = math.prod(shape) * found.itemsize
        if nbytes != info.file_size - fh.tell():
            raise NpzRefused(
                f"member {name!r} declares shape {shape} ({nbytes} bytes) but holds {info.file_size - fh.tell()} bytes"
            )
        array = np.empty(shape, dtype=found)
        if nbytes and fh.readinto(memoryview(array).cast("B")) != nbytes:
            raise NpzRefused(f"member {name!r} is truncated")
    return array


def read_npz_checked(path: PathLike, dtypes: Mapping[str, "np.dtype"], *, max_bytes: int,
                     optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``, one per name of ``dtypes``, checked as the module says.

    Names in ``optional`` may be absent (an older layout); the result then lacks them.

    Raises
    ------
    NpzRefused
        A member name, count, declared size, dtype or shape is wrong.
    UnsafeFileError
        Not a regular file, or larger than ``max_bytes``.
    OSError, zipfile.BadZipFile
        Unreadable or not a zip file.
    """
    with open_regular(path, max_bytes) as raw, zipfile.ZipFile(raw) as zf:
        _check_members(zf, dtypes, max_bytes, optional)
        present = set(zf.namelist())
        return {name: _checked_array(zf, name, dtype) for name, dtype in dtypes.items() if f"{name}.npy" in present}

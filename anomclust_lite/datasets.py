"""Evaluation sets of the paper's protocol: MVTec AD categories and MTD.

An :class:`EvalSet` lists the images to cluster with their class names, the
labelled normal images used by the semi-supervised weights, and the
ground-truth defect mask of every image (``None`` where there is none).

Protocol (Sohn et al., WACV 2023):

- **MVTec AD category** (:func:`mvtec_category`): cluster every image of
  ``test/<type>/`` including ``good`` and excluding ``combined``; ``K`` is
  the number of remaining types. The normal set is ``train/good/``; the
  mask of ``test/<type>/NNN.png`` is ``ground_truth/<type>/NNN_mask.png``
  (none for ``good``).
- **Magnetic Tile Defect** (:func:`mtd`): cluster the defective images of
  ``MT_<Class>/Imgs/*.jpg`` plus the ``MT_Free`` images listed in
  ``free_test.txt`` (N = 582, K = 6 on the complete dataset); the other
  ``MT_Free`` images are the normal set. The mask of ``<name>.jpg`` is the
  ``<name>.png`` beside it (defect where the value is > 127).

Every list is in a deterministic sorted order. :func:`load_mask` reads a mask
aligned with the model input (same resize and centre crop as the images,
nearest-neighbour).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .core.validation import check_int
from .features.images import ALLOWED_FORMATS, display_path, read_image_file
from .features.listing import is_image_file_name
from .features.preprocess import resize_and_crop

__all__ = [
    "MVTEC_EXCLUDED_TYPES",
    "MTD_CLASSES",
    "MASK_THRESHOLD",
    "EvalSet",
    "mvtec_category",
    "mtd",
    "load_mask",
    "mask_cells",
    "shared_root",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: MVTec test types left out of clustering (images with several defect types).
MVTEC_EXCLUDED_TYPES = ("combined",)
#: MTD class folders ``MT_<Class>``; ``Free`` is the defect-free class.
MTD_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Free", "Uneven")
#: A mask pixel is a defect where its 8-bit value is greater than this.
MASK_THRESHOLD = 127
#: Environment variable naming the shared data folder.
SHARED_ENV = "ANOMCLUST_SHARED"


@dataclass(frozen=True)
class EvalSet:
    """Images to cluster, their classes, a labelled normal set and defect masks.

    Attributes
    ----------
    name : str
        Short name (the MVTec category, or ``"mtd"``).
    paths : tuple of pathlib.Path
        The N images to cluster.
    labels : tuple of str
        Class name of each image (e.g. ``"good"``, ``"broken_large"``).
    normal_paths : tuple of pathlib.Path
        Labelled normal images (semi-supervised weights).
    mask_paths : tuple of (pathlib.Path or None)
        Ground-truth defect mask of each image; ``None`` for images without a
        mask (MVTec ``good``, MTD ``Free`` images without a mask file).

    Examples
    --------
    >>> from pathlib import Path
    >>> s = EvalSet("toy", (Path("a.png"), Path("b.png")), ("good", "crack"), (), (None, None))
    >>> s.n_images, s.k, s.classes
    (2, 2, ('crack', 'good'))
    """

    name: str
    paths: Tuple[Path, ...]
    labels: Tuple[str, ...]
    normal_paths: Tuple[Path, ...]
    mask_paths: Tuple[Optional[Path], ...]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if len(self.labels) != n or len(self.mask_paths) != n:
            raise ValueError(
                f"labels and mask_paths must have one entry per image (N={n}); "
                f"got {len(self.labels)} labels and {len(self.mask_paths)} mask_paths"
            )

    @property
    def n_images(self) -> int:
        """Number of images to cluster, N."""
        return len(self.paths)

    @property
    def classes(self) -> Tuple[str, ...]:
        """Sorted distinct class names."""
        return tuple(sorted(set(self.labels)))

    @property
    def k(self) -> int:
        """Number of classes, the K given to the clustering."""
        return len(self.classes)

    def class_counts(self) -> "dict[str, int]":
        """Images per class, in :attr:`classes` order."""
        return {c: self.labels.count(c) for c in self.classes}


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {display_path(path)} is not a folder; check the dataset root")


def _image_files(folder: Path, suffixes: Optional[Tuple[str, ...]] = None) -> List[Path]:
    """Sorted image files directly in ``folder`` (optionally only these suffixes)."""
    files = []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        if suffixes is None and is_image_file_name(p.name):
            files.append(p)
        elif suffixes is not None and p.suffix.lower() in suffixes:
            files.append(p)
    return sorted(files)


def mvtec_category(root: PathLike, *, name: Optional[str] = None) -> EvalSet:
    """The evaluation set of one MVTec AD category folder.

    Parameters
    ----------
    root : str or os.PathLike
        Category folder with ``train/good/``, ``test/<type>/`` and
        ``ground_truth/<type>/`` (the MVTec AD layout).
    name : str, optional
        Name of the set; default: the folder name.

    Returns
    -------
    EvalSet
        All ``test/`` images except ``combined``, sorted by (type, file);
        normal set ``train/good/``; masks ``ground_truth/<type>/<stem>_mask.png``.

    Raises
    ------
    FileNotFoundError
        A required folder, an image or a defect mask is missing (the message
        names it).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp()) / "toy"
    >>> for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
    ...     (root / sub).mkdir(parents=True)
    >>> for sub in ("train/good/000.png", "test/good/000.png", "test/crack/000.png"):
    ...     Image.new("RGB", (8, 8)).save(root / sub)
    >>> Image.new("L", (8, 8)).save(root / "ground_truth/crack/000_mask.png")
    >>> s = mvtec_category(root)
    >>> s.name, s.labels, s.k, len(s.normal_paths)
    ('toy', ('crack', 'good'), 2, 1)
    """
    base = Path(root)
    _require_dir(base, "MVTec category folder (root)")
    test_dir, train_good, gt_dir = base / "test", base / "train" / "good", base / "ground_truth"
    _require_dir(test_dir, "MVTec test folder")
    _require_dir(train_good, "MVTec normal training folder")
    types = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    types = [t for t in types if t not in MVTEC_EXCLUDED_TYPES]
    if not types:
        raise FileNotFoundError(f"no defect-type folders found in {display_path(test_dir)}")
    paths: List[Path] = []
    labels: List[str] = []
    masks: List[Optional[Path]] = []
    for defect_type in types:
        images = _image_files(test_dir / defect_type)
        if not images:
            raise FileNotFoundError(f"no images found in {display_path(test_dir / defect_type)}")
        for image in images:
            mask: Optional[Path] = None
            if defect_type != "good":
                mask = gt_dir / defect_type / f"{image.stem}_mask.png"
                if not mask.is_file():
                    raise FileNotFoundError(
                        f"defect mask not found: {display_path(mask)} (for image {display_path(image)})"
                    )
            paths.append(image)
            labels.append(defect_type)
            masks.append(mask)
    normals = _image_files(train_good)
    if not normals:
        raise FileNotFoundError(f"no normal images found in {display_path(train_good)}")
    result = EvalSet(
        name=name if name is not None else base.name,
        paths=tuple(paths),
        labels=tuple(labels),
        normal_paths=tuple(normals),
        mask_paths=tuple(masks),
    )
    logger.info("MVTec %s: %d images, K=%d, %d normal", result.name, result.n_images, result.k, len(normals))
    return result


def _read_name_list(path: Path) -> List[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def mtd(root: PathLike, *, name: str = "mtd") -> EvalSet:
    """The evaluation set of the Magnetic Tile Defect dataset.

    Parameters
    ----------
    root : str or os.PathLike
        Folder with ``MT_<Class>/Imgs/*.jpg`` (classes :data:`MTD_CLASSES`),
        a ``.png`` mask beside each ``.jpg``, and ``free_test.txt`` listing
        the base names of the ``MT_Free`` images of the test split.
    name : str
        Name of the set.

    Returns
    -------
    EvalSet
        Defective images plus the listed ``Free`` images, sorted by
        (class, file); the other ``Free`` images form the normal set.
        Masks are the ``.png`` files (``None`` for a ``Free`` image without
        one; defective images must have one).

    Raises
    ------
    FileNotFoundError
        A class folder, ``free_test.txt``, a listed ``Free`` image or a
        defect mask is missing (the message names it).
    ValueError
        ``free_test.txt`` lists a name twice.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for c in MTD_CLASSES:
    ...     (root / f"MT_{c}" / "Imgs").mkdir(parents=True)
    ...     for i in range(2):
    ...         Image.new("L", (8, 6)).save(root / f"MT_{c}" / "Imgs" / f"{c}{i}.jpg")
    ...         Image.new("L", (8, 6)).save(root / f"MT_{c}" / "Imgs" / f"{c}{i}.png")
    >>> _ = (root / "free_test.txt").write_text("Free1\\n")
    >>> s = mtd(root)
    >>> s.n_images, s.k, [p.name for p in s.normal_paths]
    (11, 6, ['Free0.jpg'])
    """
    base = Path(root)
    _require_dir(base, "MTD folder (root)")
    list_file = base / "free_test.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"MTD test list not found: {display_path(list_file)}")
    free_test = _read_name_list(list_file)
    if len(set(free_test)) != len(free_test):
        raise ValueError(f"free_test.txt ({display_path(list_file)}) lists some image name more than once")
    free_test_set = set(free_test)

    paths: List[Path] = []
    labels: List[str] = []
    masks: List[Optional[Path]] = []
    normals: List[Path] = []
    for cls in MTD_CLASSES:
        folder = base / f"MT_{cls}" / "Imgs"
        _require_dir(folder, f"MTD class folder MT_{cls}")
        images = _image_files(folder, (".jpg",))
        if not images:
            raise FileNotFoundError(f"no .jpg images found in {display_path(folder)}")
        if cls == "Free":
            stems = {p.stem for p in images}
            missing = sorted(free_test_set - stems)
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) listed in free_test.txt not found in {display_path(folder)}, "
                    f"e.g. {missing[0]}.jpg"
                )
        for image in images:
            mask: Optional[Path] = image.with_suffix(".png")
            if cls == "Free":
                if image.stem not in free_test_set:
                    normals.append(image)
                    continue
                if not mask.is_file():
                    mask = None
            elif not mask.is_file():
                raise FileNotFoundError(f"defect mask not found: {display_path(mask)} (for image {display_path(image)})")
            paths.append(image)
            labels.append(cls)
            masks.append(mask)
    if not normals:
        raise FileNotFoundError(f"no normal MT_Free images left outside free_test.txt in {display_path(base)}")
    result = EvalSet(
        name=name,
        paths=tuple(paths),
        labels=tuple(labels),
        normal_paths=tuple(normals),
        mask_paths=tuple(masks),
    )
    logger.info("MTD: %d images, K=%d, %d normal", result.n_images, result.k, len(normals))
    return result


def load_mask(
    path: Optional[PathLike],
    *,
    resize: int = 256,
    crop: Optional[int] = 224,
    image_size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Read a defect mask aligned with the model input.

    The mask is resized and centre-cropped by
    :func:`anomclust_lite.features.preprocess.resize_and_crop`, the geometry that
    :func:`anomclust_lite.features.preprocess.preprocess` applies to its image (shorter side
    to ``resize``, then the centre ``crop x crop``; with ``crop=None`` both
    sides to ``resize``), with nearest-neighbour resampling, then thresholded
    at :data:`MASK_THRESHOLD`.

    Parameters
    ----------
    path : str, os.PathLike or None
        Mask file (8-bit, non-zero = defect); ``None`` gives an empty mask.
    resize, crop : int, int or None
        As given to the feature extractor.
    image_size : (int, int), optional
        ``(width, height)`` of the image the mask belongs to; a mask of
        another size is first resized to it (nearest). Default: the mask's
        own size.

    Returns
    -------
    ndarray of bool, shape (crop, crop) (or (resize, resize) with ``crop=None``)

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> p = Path(tempfile.mkdtemp()) / "m.png"
    >>> m = np.zeros((20, 40), np.uint8); m[:, 30:] = 255
    >>> Image.fromarray(m).save(p)
    >>> a = load_mask(p, resize=10, crop=10)
    >>> a.shape, int(a.sum())
    ((10, 10), 0)
    >>> bool(load_mask(p, resize=10, crop=None)[:, -1].all())
    True
    """
    resize_i = check_int(resize, "resize", low=1)
    crop_i = None if crop is None else check_int(crop, "crop", low=1, high=resize_i)
    if image_size is not None and not (isinstance(image_size, (tuple, list)) and len(image_size) == 2):
        raise ValueError(f"image_size must be the image's (width, height); got {image_size!r}")
    if path is None:
        side = resize_i if crop_i is None else crop_i
        return np.zeros((side, side), dtype=bool)
    mask_path = Path(path)
    if not mask_path.is_file():
        raise FileNotFoundError(f"mask file not found: {display_path(mask_path)}")
    with Image.open(io.BytesIO(read_image_file(mask_path)), formats=list(ALLOWED_FORMATS)) as raw:
        mask = raw.convert("L")
    if image_size is not None:
        wanted = (check_int(image_size[0], "image_size", low=1), check_int(image_size[1], "image_size", low=1))
        if mask.size != wanted:
            mask = mask.resize(wanted, Image.Resampling.NEAREST)
    mask = resize_and_crop(mask, resize=resize_i, crop=crop_i, resample=Image.Resampling.NEAREST)
    return np.asarray(mask, dtype=np.uint8) > MASK_THRESHOLD


def mask_cells(masks: Union[np.ndarray, Sequence[np.ndarray]], grid: Tuple[int, int]) -> np.ndarray:
    """Fraction of defect pixels in every patch cell: masks box-resized to the patch grid.

    The input of :func:`anomclust_lite.mask_weights`. Masks must be aligned
    with the model input (resized and cropped like the images, e.g. by
    :func:`load_mask`).

    Parameters
    ----------
    masks : ndarray (N, H, W) or sequence of 2-D arrays
        Binary (or boolean) masks, non-zero = defect; sizes may differ
        between images.
    grid : (int, int)
        Patch grid ``(h, w)`` of the model (``Extractor.grid``).

    Returns
    -------
    ndarray, shape (N, h, w), float64

    Examples
    --------
    >>> mask = np.zeros((1, 4, 4)); mask[0, :2, :2] = 1
    >>> mask_cells(mask, (2, 2)).tolist()
    [[[1.0, 0.0], [0.0, 0.0]]]
    """
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
        raise ValueError(f"grid must be a pair (h, w) of positive integers; got {grid!r}")
    h = check_int(grid[0], "grid", low=1)
    w = check_int(grid[1], "grid", low=1)
    if isinstance(masks, np.ndarray) and masks.ndim != 3:
        raise ValueError(f"masks must be a 3-D array (N, H, W) or a sequence of 2-D arrays; got shape {masks.shape}")
    mask_list = list(masks)
    if not mask_list:
        raise ValueError("masks must hold at least one mask")
    out = np.empty((len(mask_list), h, w), dtype=np.float64)
    for i, mask in enumerate(mask_list):
        arr = np.asarray(mask)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"masks[{i}] must be a non-empty 2-D array; got shape {arr.shape}")
        if not np.isfinite(arr.astype(np.float64)).all():
            raise ValueError(f"masks[{i}] contains NaN or inf values")
        img = Image.fromarray((arr != 0).astype(np.float32), mode="F")
        out[i] = np.asarray(img.resize((w, h), resample=Image.BOX), dtype=np.float64)
    return out


def shared_root(arg: Optional[PathLike] = None) -> Path:
    """The shared data folder (``data/mvtec``, ``data/mtd``, ``models``, ...).

    The first of: ``arg`` (a ``--shared`` option; ``None`` or ``""`` mean
    not given), ``$ANOMCLUST_SHARED``, ``../shared`` beside the repository
    when the package runs from a source checkout (a ``pyproject.toml`` next
    to the package folder), else ``../shared`` beside the working
    directory. The folder is not checked: callers say what they miss.

    Examples
    --------
    >>> shared_root("/data/shared").as_posix()
    '/data/shared'
    """
    if arg:
        return Path(arg)
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout.parent / "shared"
    return Path.cwd().parent / "shared"

"""The features of a large run kept on disk: a memory-mapped bags file while the run lasts.

Above ``--fit-size`` images the model fits a seeded sample and assigns the
rest in chunks (:mod:`anomclust_lite.estimator.scale`), and ``assign`` of more
than the model's fit size assigns in chunks too, so neither needs every
image's features at once. The command then has the extractor write
them into a ``.bags-*.tmp`` file inside the output folder (a disk the user
chose, not a RAM-backed temporary folder) and reads them through a memory
map; the file is deleted when the fit ends, and a file left by a killed run
is removed by the next run in that folder (:mod:`.out_dir` deletes our
``.*.tmp`` leftovers).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from ..estimator.clusterer import AnomalyClusterer
from ..features.images import display_path
from .console import Console

__all__ = ["bags_on_disk"]


@contextlib.contextmanager
def bags_on_disk(model: AnomalyClusterer, n_images: int, out: Path, console: Console) -> Iterator[Optional[Path]]:
    """A new, private bags file in ``out`` when ``model`` will fit a sample of ``n_images``; else None.

    The file is removed on leaving the block, whatever happens.
    """
    if model.exact or n_images <= model.fit_size:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix=".bags-", suffix=".tmp", dir=out)
    os.close(fd)
    path = Path(name)
    console.info(f"{n_images} images, more than the fit size {model.fit_size} (--fit-size): their features "
                 f"stay on disk in {display_path(path)} while the run lasts")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

"""Write the embedded default backbone (ResNet-50 v2 layer 2, float16) into the package.

Usage::

    python tools/build_embedded_backbone.py --weights ../shared/weights/resnet50v2 \
        [--out anomclust_lite/backbones/data/resnet50v2_layer2.npz]

Reads the ``resnetv24_*.npy`` tensors of the ONNX Model Zoo's ``resnet50-v2-7``
(one file per tensor), keeps the 120 the layer-2 model needs, and writes them
as a deterministic ``.npz`` (kernels float16, BatchNorm vectors float32, no
pickle). Prints the file's SHA-256: put it in
``anomclust_lite/backbones/embedded.py`` (``EMBEDDED_SHA256``), then run
``tests/test_embedded_backbone.py``.

Exit status: 0 on success, 1 on a missing or bad weights file, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import List, Optional

import anomclust_lite as ac

_DEFAULT_OUT = Path(__file__).resolve().parent.parent / "anomclust_lite" / "backbones" / "data" / "resnet50v2_layer2.npz"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_embedded_backbone.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", metavar="DIR", required=True, help="folder of resnetv24_*.npy files")
    p.add_argument("--out", metavar="PATH.npz", default=str(_DEFAULT_OUT), help="output file (default: the package's)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    out = Path(args.out)
    try:
        data = ac.write_embedded_backbone(args.weights, out)
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(data) / 1e6:.2f} MB)")
    print(f"EMBEDDED_SHA256 = \"{hashlib.sha256(data).hexdigest()}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export torchvision's WideResNet-50-2 (up to layer2 + 3x3 avg-pool) to ONNX, without torch.

Usage::

    python tools/export_wrn50.py --out wrn50_layer2.onnx [--checkpoint PATH] [--allow-unverified] [--no-cache]

Without ``--checkpoint`` the official checkpoint is downloaded (263 MB) to the
per-user cache (``$ANOMCLUST_CACHE``, else ``$XDG_CACHE_HOME/anomclust_lite``,
else ``~/.cache/anomclust_lite``), or taken from there if already present.
A model built from torchvision's verified checkpoint is also kept in the cache
as backbone ``wrn50`` (``--backbone wrn50``) unless ``--no-cache`` is given; a
model from any other checkpoint (``--allow-unverified``) is written to
``--out`` only. The installed command ``anomclust-lite backbones build wrn50``
does the same, and can keep an unverified model under a name (``--name``).

Exit status: 0 on success, 1 on a bad checkpoint / file / network error
(one line on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import anomclust_lite as ac


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export_wrn50.py",
        description="Build the WideResNet-50-2 layer-2 ONNX feature extractor from torchvision's checkpoint "
        "(no torch needed).",
    )
    p.add_argument("--checkpoint", metavar="PATH", help="wide_resnet50_2-95faca4d.pth (default: download to the cache)")
    p.add_argument("--out", metavar="PATH.onnx", required=True, help="where to write the ONNX model")
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept a checkpoint whose SHA-256 does not match torchvision's (e.g. your own weights)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not copy the model to the user cache")
    return p


class _Progress:
    """Prints download progress on one stderr line."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, done: int, total: Optional[int]) -> None:
        self.started = True
        msg = f"\rdownloading: {done / 1e6:7.1f} MB" + (f" / {total / 1e6:.1f} MB" if total else "")
        print(msg, end="", file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.started:
            print(file=sys.stderr)
            self.started = False


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage message
        return int(exc.code) if isinstance(exc.code, int) else 2

    progress = _Progress()
    try:
        built = ac.build_wrn50_backbone(
            args.checkpoint, allow_unverified=args.allow_unverified, out=args.out, store=not args.no_cache,
            progress=progress,
        )
    except (ValueError, OSError) as exc:
        progress.end_line()
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    progress.end_line()
    print(f"wrote {built.out}")
    if built.stored is not None:
        print(f"cached as backbone {built.name!r}: {built.stored} (use it with --backbone {built.name})")
    elif not built.verified and not args.no_cache:
        print("not cached: the checkpoint is not torchvision's verified one; use it with --model "
              f"{built.out}, or keep it by name: anomclust-lite backbones build wrn50 --checkpoint PATH "
              "--allow-unverified --name NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())

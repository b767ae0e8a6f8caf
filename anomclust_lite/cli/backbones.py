"""``anomclust-lite backbones``: list the backbones, or build the paper's WideResNet-50-2.

::

    anomclust-lite backbones
    anomclust-lite backbones build wrn50 [--checkpoint PATH] [--allow-unverified] [--name NAME] [--out PATH.onnx]

The listing shows each backbone's state (ready, not built, not usable and
why) and where it came from; the build follows issue 19's rule: only
torchvision's checksum-verified checkpoint becomes ``wrn50``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, TextIO

from .outputs import PROG

__all__ = ["build_backbones_parser", "backbones_command"]

_DESCRIPTION = f"""\
List the backbones (the CNNs that turn images into patch features), or build
the paper's WideResNet-50-2.

  {PROG} backbones                 list them, with their state and origin
  {PROG} backbones build wrn50     build WideResNet-50-2 layer 2 from torchvision's
                                   ImageNet checkpoint (downloaded, 263 MB, unless
                                   --checkpoint is given); then use --backbone wrn50

Only torchvision's checksum-verified checkpoint becomes 'wrn50'. Other weights
(--allow-unverified, e.g. your own fine-tuned WideResNet-50-2) are written to
--out, or kept in the cache under --name NAME (then --backbone NAME)."""


def build_backbones_parser() -> argparse.ArgumentParser:
    """The parser of ``anomclust-lite backbones [build wrn50 ...]``."""
    p = argparse.ArgumentParser(prog=f"{PROG} backbones", description=_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="{list,build}")
    sub.add_parser("list", help="list the backbones (the default action)")
    b = sub.add_parser("build", help="build a backbone", prog=f"{PROG} backbones build",
                       description="Build WideResNet-50-2 layer 2 (the paper's backbone) as an ONNX model.")
    b.add_argument("architecture", choices=("wrn50",), help="what to build (wrn50: WideResNet-50-2 layer 2)")
    b.add_argument("--checkpoint", metavar="PATH",
                   help="wide_resnet50_2 checkpoint (.pth); default: torchvision's, from the cache or downloaded")
    b.add_argument("--allow-unverified", action="store_true",
                   help="accept a checkpoint that is not torchvision's (SHA-256 mismatch), e.g. your own weights; "
                        "needs --name or --out")
    b.add_argument("--name", metavar="NAME",
                   help="keep the model in the cache under this name (then --backbone NAME); default wrn50 for "
                        "torchvision's verified checkpoint")
    b.add_argument("--out", metavar="PATH.onnx", help="also write the model file here (then --model PATH.onnx)")
    b.add_argument("-q", "--quiet", action="store_true", help="no download progress")
    return p


def _print_list(stream: TextIO) -> None:
    from ..backbones.store import DEFAULT_BACKBONE, list_backbones
    from ..features.models import MODEL_ENV

    for backbone in list_backbones():
        default = " (default)" if backbone.name == DEFAULT_BACKBONE else ""
        print(f"{backbone.name}{default}: {backbone.state}", file=stream)
        print(f"    {backbone.description}", file=stream)
        print(f"    {backbone.origin}", file=stream)
        if backbone.path is not None:
            later = "" if backbone.path.is_file() else " (written there from the package at first use)"
            print(f"    file: {backbone.path}{later}", file=stream)
        if backbone.state == "not built":
            print(f"    build it with: {PROG} backbones build {backbone.name} [--checkpoint PATH]", file=stream)
        elif not backbone.ready:
            print(f"    not used until rebuilt: {PROG} backbones build wrn50 ...", file=stream)
    print("any ONNX file: --model PATH.onnx (one (N, 3, H, W) input, a 4-D feature-map output)", file=stream)
    env = os.environ.get(MODEL_ENV, "")
    if env:
        print(f"${MODEL_ENV} = {env}: used when neither --model nor --backbone is given", file=stream)


def _progress(quiet: bool) -> Callable[[int, Optional[int]], None]:
    state = {"last": -1}

    def progress(done: int, total: Optional[int]) -> None:
        mb = done >> 24 << 4  # 16 MB steps
        if quiet or (mb == state["last"] and done != total):
            return
        state["last"] = mb
        print(f"downloading the WideResNet-50-2 checkpoint: {done >> 20}" + (f" of {total >> 20} MB" if total else " MB"),
              file=sys.stderr, flush=True)

    return progress


def _build(args: argparse.Namespace, stream: TextIO) -> None:
    from ..backbones.wrn50 import build_wrn50_backbone

    built = build_wrn50_backbone(args.checkpoint, allow_unverified=args.allow_unverified, name=args.name,
                                 out=args.out, progress=_progress(args.quiet))
    status = "torchvision's, checksum verified" if built.verified else "checksum NOT verified"
    print(f"built WideResNet-50-2 layer 2 from {built.checkpoint} ({status})", file=stream)
    if built.out is not None:
        print(f"wrote {built.out} (use it with --model {built.out})", file=stream)
    if built.stored is not None:
        print(f"cached as backbone {built.name!r}: {built.stored} (use it with --backbone {built.name})", file=stream)


def backbones_command(args: argparse.Namespace, stream: Optional[TextIO] = None) -> int:
    """Run ``anomclust-lite backbones ...`` for parsed options (:func:`build_backbones_parser`); the exit status."""
    stream = stream if stream is not None else sys.stdout
    try:
        if args.action == "build":
            _build(args, stream)
        else:
            _print_list(stream)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0

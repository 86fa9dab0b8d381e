"""Arguments several ``mnas`` commands share: which architecture, and how it is built."""

from __future__ import annotations

import argparse

from mnas import references
from mnas.arch import Architecture, decode
from mnas.errors import UsageError

__all__ = ["add_arch_selector", "arch_from_args"]


def add_arch_selector(p: argparse.ArgumentParser) -> None:
    """``NAME`` or ``--blocks``, and the build parameters (width, resolution, classes)."""
    p.add_argument("name", nargs="?", help=f"a reference: {', '.join(references.names())}")
    p.add_argument("--blocks", help="block strings, e.g. 'r1_k3_s11_e1_i32_o16_noskip ...'")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1.0)")
    p.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default 1000)")


def arch_from_args(args: argparse.Namespace) -> tuple[str | None, Architecture]:
    """The reference name (None for ``--blocks``) and the architecture."""
    if args.name and args.blocks:
        raise UsageError("give an architecture NAME or --blocks, not both")
    if args.name:
        return args.name, references.get(args.name)
    if args.blocks:
        return None, decode(args.blocks)
    raise UsageError(
        f"give an architecture NAME ({', '.join(references.names())}) or --blocks 'S1 S2 ...'"
    )

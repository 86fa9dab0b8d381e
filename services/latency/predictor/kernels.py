"""Kernels: the pieces a network's latency is summed from, keyed by their exact shapes.

A kernel is one layer at the sizes it runs at in the network (op, kernel, stride,
expansion, channels that arrive, declared input filters, output filters, SE ratio, skip,
input size, activation), the stem at the input resolution, or the head (1x1 conv, pool,
classifier) at the last layer's output. Two networks that share a layer configuration at
the same sizes share its kernel, so a table of kernels measured once prices many networks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mnas.arch import Architecture, Op, Skip
from mnas.cost import count_plan, layer_cost
from mnas.layers import plan
from mnas.space import SearchSpace

__all__ = [
    "HeadKernel",
    "Kernel",
    "LayerKernel",
    "NetworkKernels",
    "StemKernel",
    "kernel_from_json",
    "kernel_to_json",
    "network_kernels",
    "space_kernels",
]


@dataclass(frozen=True)
class LayerKernel:
    """One layer of a block at its network's sizes (see :class:`mnas.layers.LayerPlan`)."""

    op: str
    kernel: int
    stride: int
    expansion: int
    in_channels: int  # channels that arrive
    declared_in: int  # declared input filters (sets expansion width, SE width, shortcut)
    out_channels: int
    se_ratio: float
    skip: str
    in_size: int
    activation: str


@dataclass(frozen=True)
class StemKernel:
    """The stem convolution (3x3 stride 2 from the image) at the input resolution."""

    channels: int
    resolution: int
    activation: str


@dataclass(frozen=True)
class HeadKernel:
    """The head: 1x1 conv to ``head_channels``, global pool, classifier to ``num_classes``."""

    in_channels: int
    size: int
    head_channels: int
    num_classes: int
    activation: str


Kernel = LayerKernel | StemKernel | HeadKernel

_KINDS: dict[str, type[LayerKernel] | type[StemKernel] | type[HeadKernel]] = {
    "layer": LayerKernel,
    "stem": StemKernel,
    "head": HeadKernel,
}


@dataclass(frozen=True)
class NetworkKernels:
    """A network's kernels in order and the features its correction is fitted on."""

    kernels: tuple[Kernel, ...]
    kernel_macs: tuple[int, ...]  # multiply-adds of each kernel
    macs: int
    layers: int


def network_kernels(
    arch: Architecture, *, resolution: int, width: float, num_classes: int
) -> NetworkKernels:
    """The stem, every layer and the head of ``arch`` built at these sizes, as kernels."""
    net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
    act = arch.activation.value
    cost = count_plan(net)
    kernels: list[Kernel] = [StemKernel(net.stem_channels, resolution, act)]
    macs: list[int] = [cost.stem.macs]
    for layer in net.layers:
        block = arch.blocks[layer.block]
        kernels.append(
            LayerKernel(
                op=block.op.value,
                kernel=layer.kernel,
                stride=layer.stride,
                expansion=block.expansion,
                in_channels=layer.in_channels,
                declared_in=layer.declared_in,
                out_channels=layer.out_channels,
                se_ratio=float(block.se_ratio),
                skip=block.skip.value,
                in_size=layer.in_size,
                activation=act,
            )
        )
        macs.append(layer_cost(layer).macs)
    kernels.append(
        HeadKernel(net.last_channels, net.final_size, net.head_channels, num_classes, act)
    )
    macs.append(cost.head.macs)
    return NetworkKernels(tuple(kernels), tuple(macs), sum(macs), len(net.layers))


def space_kernels(space: SearchSpace) -> set[Kernel]:
    """Every kernel of every architecture of ``space`` at its width, resolution and classes.

    Walks each block's choices with each output-filter choice of the block before it;
    other blocks keep their reference choices, which fixes nothing a kernel depends on
    (sizes only depend on the fixed strides).
    """
    found: set[Kernel] = set()
    per = len(space.decisions) // space.num_blocks
    reference = space.reference_decisions()
    most_layers = max(range(len(space.layer_deltas)), key=lambda i: space.layer_deltas[i])
    for b in range(space.num_blocks):
        previous = range(len(space.filter_ratios)) if b > 0 else range(1)
        for prev_filters in previous:
            for choice in _block_choices(space):
                decisions = list(reference)
                if b > 0:
                    decisions[(b - 1) * per + 4] = prev_filters
                decisions[b * per : (b + 1) * per] = [*choice, most_layers]
                arch = space.to_architecture(decisions)
                found.update(
                    network_kernels(
                        arch,
                        resolution=space.resolution,
                        width=space.width,
                        num_classes=space.num_classes,
                    ).kernels
                )
    return found


def _block_choices(space: SearchSpace) -> Iterator[list[int]]:
    for op in range(len(space.ops)):
        for kernel in range(len(space.kernels)):
            for se in range(len(space.se_ratios)):
                for skip in range(len(space.skips)):
                    for filters in range(len(space.filter_ratios)):
                        yield [op, kernel, se, skip, filters]


def kernel_to_json(kernel: Kernel) -> dict[str, Any]:
    kind = next(name for name, cls in _KINDS.items() if isinstance(kernel, cls))
    return {"kind": kind, **asdict(kernel)}


def kernel_from_json(data: Mapping[str, Any]) -> Kernel:
    """The kernel a :func:`kernel_to_json` object describes; ``ValueError`` if malformed."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ValueError(f"kernel: unknown kind {kind!r} (known: {', '.join(_KINDS)})")
    try:
        kernel = cls(**fields)
    except TypeError as err:
        raise ValueError(f"kernel {dict(data)!r}: {err}") from None
    if isinstance(kernel, LayerKernel):
        Op(kernel.op)  # raises ValueError for an unknown op
        Skip(kernel.skip)
    return kernel

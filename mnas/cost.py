"""Parameters and multiply-adds, counted analytically from the network plan.

Each primitive of :mod:`mnas.primitives` is counted by one entry of one table.

Parameters are the trainable ones (what ``torch.nn.Module.parameters()`` and Keras'
trainable weights hold): convolution kernels, batch-norm scale and shift (2 per channel;
the running statistics are buffers), SE and classifier biases. Multiply-adds count
convolutions, SE's 1x1 convolutions and the classifier; batch norm folds into the
convolutions at inference, and activations, pooling, additions and the SE gating are not
multiply-adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mnas.arch import Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.layers import LayerPlan, NetworkPlan, plan
from mnas.primitives import (
    Add,
    AvgPool,
    Conv,
    Depthwise,
    Primitive,
    SqueezeExcite,
    entry,
    head_conv,
    layer_recipe,
    stem_conv,
)

__all__ = [
    "BlockCost",
    "Cost",
    "CostReport",
    "count",
    "count_plan",
    "layer_cost",
    "primitive_cost",
]


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


ZERO = Cost(0, 0)


@dataclass(frozen=True)
class BlockCost:
    """One block's share: its layers' costs and the shape it hands on."""

    index: int
    block: str
    layers: int
    params: int
    macs: int
    out_channels: int
    out_size: int


@dataclass(frozen=True)
class CostReport:
    params: int
    macs: int
    stem: Cost
    blocks: tuple[BlockCost, ...]
    head: Cost


def count(
    arch: Architecture,
    *,
    width: float = DEFAULT_WIDTH,
    resolution: int = DEFAULT_RESOLUTION,
    num_classes: int = DEFAULT_NUM_CLASSES,
) -> CostReport:
    """Count ``arch`` at ``width``, ``resolution`` and ``num_classes``."""
    return count_plan(plan(arch, width=width, resolution=resolution, num_classes=num_classes))


def count_plan(net: NetworkPlan) -> CostReport:
    stem = primitive_cost(stem_conv(net))
    per_block: dict[int, Cost] = {}
    for layer in net.layers:
        per_block[layer.block] = per_block.get(layer.block, ZERO) + layer_cost(layer)
    blocks = []
    for b, spec in enumerate(net.arch.blocks):
        last = [layer for layer in net.layers if layer.block == b][-1]
        cost = per_block[b]
        blocks.append(
            BlockCost(
                index=b,
                block=str(spec),
                layers=spec.repeats,
                params=cost.params,
                macs=cost.macs,
                out_channels=last.out_channels,
                out_size=last.out_size,
            )
        )
    head = primitive_cost(head_conv(net)) + Cost(
        net.head_channels * net.num_classes + net.num_classes,
        net.head_channels * net.num_classes,
    )
    total = stem + head
    for cost in per_block.values():
        total = total + cost
    return CostReport(
        params=total.params, macs=total.macs, stem=stem, blocks=tuple(blocks), head=head
    )


def layer_cost(layer: LayerPlan) -> Cost:
    """One layer: its main path, SE and shortcut projection."""
    return _sum(layer_recipe(layer).steps)


def primitive_cost(step: Primitive) -> Cost:
    """What one primitive holds and computes."""
    return entry(_COSTS, type(step))(step)


def _sum(steps: Iterable[Primitive]) -> Cost:
    total = ZERO
    for step in steps:
        total += primitive_cost(step)
    return total


def _conv(step: Conv) -> Cost:
    weights = step.kernel * step.kernel * step.in_channels * step.out_channels
    return Cost(weights, weights * step.out_size**2) + _bn(step.out_channels)


def _depthwise(step: Depthwise) -> Cost:
    weights = step.kernel * step.kernel * step.channels
    return Cost(weights, weights * step.out_size**2) + _bn(step.channels)


def _squeeze_excite(step: SqueezeExcite) -> Cost:
    mid, se = step.channels, step.squeezed
    return Cost(mid * se + se, mid * se) + Cost(se * mid + mid, se * mid)  # reduce, expand


def _add(step: Add) -> Cost:
    return _sum(step.shortcut)


def _bn(channels: int) -> Cost:
    return Cost(2 * channels, 0)


# Activations, pooling, additions and the SE gating cost nothing here.
_COSTS: dict[type, Callable[[Any], Cost]] = {
    Conv: _conv,
    Depthwise: _depthwise,
    SqueezeExcite: _squeeze_excite,
    AvgPool: lambda step: ZERO,
    Add: _add,
}

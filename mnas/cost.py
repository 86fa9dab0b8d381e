"""Parameters and multiply-adds, counted analytically from the network plan.

Parameters are the trainable ones (what ``torch.nn.Module.parameters()`` and Keras'
trainable weights hold): convolution kernels, batch-norm scale and shift (2 per channel;
the running statistics are buffers), SE and classifier biases. Multiply-adds count
convolutions, SE's 1x1 convolutions and the classifier; batch norm folds into the
convolutions at inference, and activations, pooling, additions and the SE gating are not
multiply-adds.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnas.arch import Architecture, Op
from mnas.layers import IMAGE_CHANNELS, STEM_KERNEL, LayerPlan, NetworkPlan, plan

__all__ = ["BlockCost", "Cost", "CostReport", "count", "count_plan", "layer_cost"]


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
    arch: Architecture, *, width: float = 1.0, resolution: int = 224, num_classes: int = 1000
) -> CostReport:
    """Count ``arch`` at ``width``, ``resolution`` and ``num_classes``."""
    return count_plan(plan(arch, width=width, resolution=resolution, num_classes=num_classes))


def count_plan(net: NetworkPlan) -> CostReport:
    stem = _conv(IMAGE_CHANNELS, net.stem_channels, STEM_KERNEL, net.stem_size) + _bn(
        net.stem_channels
    )
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
    head = (
        _conv(net.last_channels, net.head_channels, 1, net.final_size)
        + _bn(net.head_channels)
        + Cost(
            net.head_channels * net.num_classes + net.num_classes,
            net.head_channels * net.num_classes,
        )
    )
    total = stem + head
    for cost in per_block.values():
        total = total + cost
    return CostReport(
        params=total.params, macs=total.macs, stem=stem, blocks=tuple(blocks), head=head
    )


def layer_cost(layer: LayerPlan) -> Cost:
    """One layer: its main path, SE and shortcut projection."""
    size_in, size = layer.in_size, layer.out_size
    total = ZERO
    if layer.op is Op.CONV:
        total += _conv(layer.in_channels, layer.out_channels, layer.kernel, size)
        total += _bn(layer.out_channels)
    else:
        if layer.expands:
            total += _conv(layer.in_channels, layer.mid_channels, 1, size_in)
            total += _bn(layer.mid_channels)
        total += _depthwise(layer.mid_channels, layer.kernel, size) + _bn(layer.mid_channels)
        total += _conv(layer.mid_channels, layer.out_channels, 1, size) + _bn(layer.out_channels)
    if layer.se_channels:
        mid, se = layer.mid_channels, layer.se_channels
        total += Cost(mid * se + se, mid * se)  # reduce, with bias
        total += Cost(se * mid + mid, se * mid)  # expand, with bias
    if layer.shortcut_projects:
        total += _conv(layer.in_channels, layer.out_channels, 1, size) + _bn(layer.out_channels)
    return total


def _conv(cin: int, cout: int, kernel: int, out_size: int) -> Cost:
    weights = kernel * kernel * cin * cout
    return Cost(weights, weights * out_size * out_size)


def _depthwise(channels: int, kernel: int, out_size: int) -> Cost:
    weights = kernel * kernel * channels
    return Cost(weights, weights * out_size * out_size)


def _bn(channels: int) -> Cost:
    return Cost(2 * channels, 0)

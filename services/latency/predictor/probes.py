"""Probes: tiny networks whose measured difference is one kernel's latency.

Every probe is an ordinary :class:`~mnas.arch.Architecture` exported like any other, so
a kernel is timed by the same exporter and oracle as whole networks. A network needs a
stem, a block and a head, so a kernel is measured as the difference of two probes that
share everything else:

- layer: stem (to the layer's input channels, at twice its input size) + the layer + a
  minimal head (1x1 conv to 8 channels, 1 class), minus the *baseline* of that input
  and stride: the same stem + a 1x1 conv to 8 channels with the layer's stride + the
  minimal head. Both heads then run at the layer's output size, so what is left besides
  the layer is one small 1x1 conv, at any stride;
- stem: the baseline at the network's resolution, stride 1, undifferenced (it carries
  the fixed cost of an invocation, which the correction then apportions);
- head: stem + a 1x1 conv that keeps the channels + the real head, minus the same with
  the minimal head.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnas.arch import Activation, Architecture, BlockSpec, Op, Skip
from services.latency.predictor.kernels import Kernel, LayerKernel, StemKernel

__all__ = ["PROBE_HEAD", "Probe", "baseline", "probes"]

PROBE_HEAD = 8  # filters of the minimal head and of the baseline's 1x1 conv


@dataclass(frozen=True)
class Probe:
    """An architecture and how to build it for a measurement (width 1, batch 1)."""

    arch: Architecture
    resolution: int
    num_classes: int


def _one_block(block: BlockSpec, stem: int, head: int, activation: str) -> Architecture:
    return Architecture(
        blocks=(block,),
        stem_filters=stem,
        head_filters=head,
        activation=Activation(activation),
        dropout=0.0,
    )


def _conv1x1(channels_in: int, channels_out: int, stride: int = 1) -> BlockSpec:
    return BlockSpec(
        op=Op.CONV,
        repeats=1,
        kernel=1,
        stride=stride,
        expansion=1,
        input_filters=channels_in,
        output_filters=channels_out,
        skip=Skip.NONE,
    )


def baseline(channels: int, resolution: int, activation: str, stride: int = 1) -> Probe:
    """Stem to ``channels`` at ``resolution`` + 1x1 conv to 8 at ``stride`` + minimal
    head."""
    block = _conv1x1(channels, PROBE_HEAD, stride)
    arch = _one_block(block, channels, PROBE_HEAD, activation)
    return Probe(arch, resolution, 1)


def probes(kernel: Kernel) -> tuple[Probe, Probe | None]:
    """The probe that contains ``kernel`` and the one to subtract from it (``None``: none)."""
    if isinstance(kernel, StemKernel):
        return baseline(kernel.channels, kernel.resolution, kernel.activation), None
    if isinstance(kernel, LayerKernel):
        block = BlockSpec(
            op=Op(kernel.op),
            repeats=1,
            kernel=kernel.kernel,
            stride=kernel.stride,
            expansion=kernel.expansion,
            input_filters=kernel.declared_in,
            output_filters=kernel.out_channels,
            se_ratio=kernel.se_ratio,
            skip=Skip(kernel.skip),
        )
        resolution = 2 * kernel.in_size
        arch = _one_block(block, kernel.in_channels, PROBE_HEAD, kernel.activation)
        return (
            Probe(arch, resolution, 1),
            baseline(kernel.in_channels, resolution, kernel.activation, kernel.stride),
        )
    keep = _conv1x1(kernel.in_channels, kernel.in_channels)
    resolution = 2 * kernel.size
    full = _one_block(keep, kernel.in_channels, kernel.head_channels, kernel.activation)
    minimal = _one_block(keep, kernel.in_channels, PROBE_HEAD, kernel.activation)
    return Probe(full, resolution, kernel.num_classes), Probe(minimal, resolution, 1)

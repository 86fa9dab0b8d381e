"""The network plan: an architecture resolved, layer by layer, at one width and resolution.

Every model-wide rule lives here, once: width scaling with ``round_filters``, only a
block's first layer strides, which layers get a shortcut, how wide the SE squeeze is, and
the spatial size after each layer ("same" padding: ``ceil(size / stride)``). The PyTorch
builder, the Keras builder and the cost counter all walk this plan, so they cannot
disagree about the network.

Shortcuts, per layer:

- ``identity`` skip: ``y = F(x) + x`` where the layer's stride is 1 and its declared input
  filters, the channels that actually arrive and its output filters are all equal;
  otherwise no shortcut.
- ``pool`` skip: every layer has a shortcut. ``s(x)`` average-pools ``x`` with a
  ``stride x stride`` window and stride (windows that overhang the edge average the
  pixels they cover, matching "same" padding), then, when the channels differ, projects
  them with a 1x1 convolution (no bias) and batch norm, no activation;
  ``y = F(x) + s(x)``. Where stride is 1 and channels match, ``s`` is the identity.
- ``none``: no shortcut.

Declared vs. arriving channels: a block string declares its input filters, and the
previous layer decides what arrives. They differ only in hand-written strings such as
``mnasnet-small``'s first block (``i16`` after an 8-filter stem). As in the official code,
the convolutions take what arrives; the declared input filters set the expansion width
(``i * e``), the SE squeeze width and whether an identity residual is possible.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from mnas.arch import Activation, Architecture, Op, Skip, round_filters
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH

__all__ = ["LayerPlan", "NetworkPlan", "Shortcut", "plan"]


class Shortcut(enum.Enum):
    NONE = "none"
    IDENTITY = "identity"
    POOL = "pool"  # average-pool to the stride and/or 1x1-project channels


@dataclass(frozen=True)
class LayerPlan:
    """One layer of one block, with concrete channel counts and sizes."""

    block: int
    index: int
    op: Op
    kernel: int
    stride: int
    in_channels: int  # channels that arrive
    declared_in: int  # declared input filters (set the expansion and SE widths, the shortcut)
    mid_channels: int  # width of the depthwise and SE stage (conv: the output)
    out_channels: int
    se_channels: int  # squeeze width, 0 when the layer has no SE
    shortcut: Shortcut
    in_size: int  # spatial size (height = width) that arrives
    out_size: int
    activation: Activation  # the network's, after every convolution but the linear ones

    @property
    def name(self) -> str:
        """The module path both builders use: ``blocks.<block>.<index>``."""
        return f"blocks.{self.block}.{self.index}"

    @property
    def expands(self) -> bool:
        return self.op is Op.MBCONV

    @property
    def shortcut_pools(self) -> bool:
        return self.shortcut is Shortcut.POOL and self.stride > 1

    @property
    def shortcut_projects(self) -> bool:
        return self.shortcut is Shortcut.POOL and self.in_channels != self.out_channels


@dataclass(frozen=True)
class NetworkPlan:
    """Stem, layers and head of one architecture at one width, resolution and class count."""

    arch: Architecture
    width: float
    resolution: int
    num_classes: int
    stem_channels: int
    stem_size: int  # spatial size after the stride-2 stem
    layers: tuple[LayerPlan, ...]
    head_channels: int

    @property
    def activation(self) -> Activation:
        return self.arch.activation

    @property
    def dropout(self) -> float:
        return self.arch.dropout

    @property
    def last_channels(self) -> int:
        return self.layers[-1].out_channels

    @property
    def final_size(self) -> int:
        return self.layers[-1].out_size


STEM_KERNEL = 3
STEM_STRIDE = 2
IMAGE_CHANNELS = 3


def plan(
    arch: Architecture,
    *,
    width: float = DEFAULT_WIDTH,
    resolution: int = DEFAULT_RESOLUTION,
    num_classes: int = DEFAULT_NUM_CLASSES,
) -> NetworkPlan:
    """Resolve ``arch`` at ``width``, ``resolution`` and ``num_classes``."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width: must be a positive number, got {width!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution: must be a positive integer, got {resolution!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: must be a positive integer, got {num_classes!r}")

    stem_channels = round_filters(arch.stem_filters, width)
    size = math.ceil(resolution / STEM_STRIDE)
    stem_size = size
    arriving = stem_channels
    layers: list[LayerPlan] = []
    for b, block in enumerate(arch.blocks):
        out = round_filters(block.output_filters, width)
        declared_in = round_filters(block.input_filters, width)
        for j in range(block.repeats):
            stride = block.stride if j == 0 else 1
            if j > 0:
                declared_in = out
            if block.op is Op.MBCONV:
                mid = declared_in * block.expansion
            elif block.op is Op.DCONV:
                mid = arriving
            else:
                mid = out
            se = max(1, int(declared_in * block.se_ratio)) if block.has_se else 0
            out_size = math.ceil(size / stride)
            layers.append(
                LayerPlan(
                    block=b,
                    index=j,
                    op=block.op,
                    kernel=block.kernel,
                    stride=stride,
                    in_channels=arriving,
                    declared_in=declared_in,
                    mid_channels=mid,
                    out_channels=out,
                    se_channels=se,
                    shortcut=_shortcut(block.skip, stride, declared_in, arriving, out),
                    in_size=size,
                    out_size=out_size,
                    activation=arch.activation,
                )
            )
            arriving = out
            size = out_size
    return NetworkPlan(
        arch=arch,
        width=float(width),
        resolution=resolution,
        num_classes=num_classes,
        stem_channels=stem_channels,
        stem_size=stem_size,
        layers=tuple(layers),
        head_channels=arch.head_filters,
    )


def _shortcut(skip: Skip, stride: int, declared_in: int, arriving: int, out: int) -> Shortcut:
    if skip is Skip.NONE:
        return Shortcut.NONE
    matches = stride == 1 and arriving == out
    if skip is Skip.IDENTITY:
        return Shortcut.IDENTITY if matches and declared_in == out else Shortcut.NONE
    return Shortcut.IDENTITY if matches else Shortcut.POOL

"""What each layer is made of, written once: the network plan as sequences of primitives.

A layer of :mod:`mnas.layers` is a short sequence of primitives, each with its channels,
kernel, stride and activation: a convolution or depthwise convolution (each with batch
norm), squeeze-and-excitation, and an addition of the layer's input through its shortcut
path (average pooling, a projection). The stem and the head's convolution are
convolutions too. Cost counting and every backend (the PyTorch builder, the Keras
builder, the ``.tflite`` writer) map primitives to their own operations through one
table each, so they cannot disagree about what a layer is.

Every primitive has a name, its module path within the layer (``expand``, ``dw``,
``conv``, ``se``, ``project``; ``pool`` and ``proj`` within the shortcut path, which
:attr:`Add.path` names), so weights carry across backends by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from mnas.arch import Activation, Op
from mnas.layers import (
    IMAGE_CHANNELS,
    STEM_KERNEL,
    STEM_STRIDE,
    LayerPlan,
    NetworkPlan,
    Shortcut,
)

__all__ = [
    "Add",
    "AvgPool",
    "Conv",
    "Depthwise",
    "LayerRecipe",
    "Primitive",
    "SqueezeExcite",
    "entry",
    "head_conv",
    "layer_recipe",
    "stem_conv",
]


@dataclass(frozen=True)
class Conv:
    """A k x k convolution without bias ("same" padding), batch norm, the activation if any."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    out_size: int  # spatial size of the output (height = width)
    activation: Activation | None


@dataclass(frozen=True)
class Depthwise:
    """A k x k depthwise convolution without bias ("same" padding), batch norm, activation."""

    name: str
    channels: int
    kernel: int
    stride: int
    out_size: int
    activation: Activation | None


@dataclass(frozen=True)
class SqueezeExcite:
    """Gate by ``sigmoid(expand(relu(reduce(mean(x)))))``; ``reduce`` and ``expand`` are
    1x1 convolutions with bias to ``squeezed`` channels and back."""

    name: str
    channels: int
    squeezed: int
    size: int  # spatial size of what it gates (height = width), its output's too


@dataclass(frozen=True)
class AvgPool:
    """Average pooling, window and stride ``stride``, windows at the edge averaging the
    pixels they cover ("same" padding, the padding excluded)."""

    name: str
    channels: int
    stride: int
    out_size: int


@dataclass(frozen=True)
class Add:
    """Add the layer's input, passed through ``shortcut`` (empty: as it is), to the output
    so far; the shortcut's primitives are named under ``path``."""

    name: str
    shortcut: tuple[Conv | AvgPool, ...]
    channels: int  # channels of either addend and of the sum
    size: int  # spatial size of either addend and of the sum (height = width)
    path: str = "shortcut"


Primitive = Conv | Depthwise | SqueezeExcite | AvgPool | Add


@dataclass(frozen=True)
class LayerRecipe:
    """One layer of a block as the primitives it applies in order."""

    name: str  # module path of the layer: ``blocks.<block>.<index>``
    steps: tuple[Primitive, ...]


K = TypeVar("K")
V = TypeVar("V")


def entry(table: Mapping[K, V], key: K) -> V:
    """A backend table's entry for ``key`` (a primitive's type, an activation);
    ``KeyError`` naming the known keys if it has none."""
    try:
        return table[key]
    except KeyError:
        known = ", ".join(_label(k) for k in table)
        raise KeyError(f"no entry for {_label(key)} (known: {known})") from None


def _label(key: object) -> str:
    return str(getattr(key, "__name__", getattr(key, "value", key)))


def stem_conv(net: NetworkPlan) -> Conv:
    """The stem: a 3x3 stride-2 convolution from the image, named ``stem``."""
    return Conv(
        "stem",
        IMAGE_CHANNELS,
        net.stem_channels,
        STEM_KERNEL,
        STEM_STRIDE,
        net.stem_size,
        net.activation,
    )


def head_conv(net: NetworkPlan) -> Conv:
    """The head's 1x1 convolution to ``head_channels``, named ``head`` (pooling, dropout
    and the classifier follow it)."""
    return Conv("head", net.last_channels, net.head_channels, 1, 1, net.final_size, net.activation)


def layer_recipe(layer: LayerPlan) -> LayerRecipe:
    """The primitives of ``layer``: its main path, then SE, then the shortcut's addition."""
    act, mid, size = layer.activation, layer.mid_channels, layer.out_size
    steps: list[Primitive] = []
    if layer.op is Op.CONV:
        steps.append(
            Conv(
                "conv", layer.in_channels, layer.out_channels, layer.kernel, layer.stride, size, act
            )
        )
    else:
        if layer.expands:
            steps.append(Conv("expand", layer.in_channels, mid, 1, 1, layer.in_size, act))
        steps.append(Depthwise("dw", mid, layer.kernel, layer.stride, size, act))
    if layer.se_channels:
        steps.append(SqueezeExcite("se", mid, layer.se_channels, size))
    if layer.op is not Op.CONV:
        steps.append(Conv("project", mid, layer.out_channels, 1, 1, size, None))
    if layer.shortcut is not Shortcut.NONE:
        steps.append(Add("add", _shortcut_path(layer), layer.out_channels, size))
    return LayerRecipe(layer.name, tuple(steps))


def _shortcut_path(layer: LayerPlan) -> tuple[Conv | AvgPool, ...]:
    path: list[Conv | AvgPool] = []
    if layer.shortcut_pools:
        path.append(AvgPool("pool", layer.in_channels, layer.stride, layer.out_size))
    if layer.shortcut_projects:
        path.append(Conv("proj", layer.in_channels, layer.out_channels, 1, 1, layer.out_size, None))
    return tuple(path)

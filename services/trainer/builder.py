"""Build a PyTorch module from an architecture.

``build_torch`` walks :func:`mnas.layers.plan` and builds each primitive of a layer's
recipe (:mod:`mnas.primitives`) as the small module one table names; the modules here
only wire them. Module paths (``stem.conv``, ``blocks.3.1.dw.bn``, ``head.conv``,
``classifier``) are the layer names of the Keras builder, so weights can be carried
across by name.

Padding is TensorFlow's "same" (for stride 2 on even sizes, the extra row and column go
at the bottom and right), so both builders compute the same function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnas import primitives
from mnas.arch import Activation, Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.layers import plan
from mnas.primitives import entry, head_conv, layer_recipe, stem_conv

__all__ = ["BN_EPS", "BN_MOMENTUM", "MnasModel", "build_torch", "conv_init_std"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras' 0.99


def build_torch(
    arch: Architecture,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    resolution: int = DEFAULT_RESOLUTION,
    width: float = DEFAULT_WIDTH,
) -> MnasModel:
    """A freshly initialised ``nn.Module`` for ``arch`` (NCHW input, logits out)."""
    return MnasModel(arch, num_classes=num_classes, resolution=resolution, width=width)


# Each activation as a module.
_ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    Activation.RELU: lambda: nn.ReLU(inplace=True),
    Activation.RELU6: lambda: nn.ReLU6(inplace=True),
    Activation.HARD_SWISH: lambda: nn.Hardswish(inplace=True),
}


def _activation(kind: Activation | None) -> nn.Module:
    return nn.Identity() if kind is None else entry(_ACTIVATIONS, kind)()


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding, for any stride and input size."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        static = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=static, groups=groups, bias=bias)
        self._dynamic = stride > 1 and kernel > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            x = F.pad(x, _same_pad(x.shape[-2], x.shape[-1], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_pad(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    def split(size: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    top, bottom = split(height)
    left, right = split(width)
    return left, right, top, bottom


class ConvBN(nn.Module):
    """Convolution, batch norm and an optional activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        activation: Activation | None = None,
    ) -> None:
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups=groups)
        self.bn = _bn(cout)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1, bias=True)
        self.expand = nn.Conv2d(squeezed, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(F.relu(self.reduce(s)))
        return x * torch.sigmoid(s)


class Shortcut(nn.Module):
    """Adds the layer's input, through the shortcut's primitives (each a module named as
    the primitive), to the output so far."""

    def __init__(self, steps: Iterable[primitives.Primitive]) -> None:
        super().__init__()
        for step in steps:
            self.add_module(step.name, _module(step))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return y + x


class Layer(nn.Module):
    """One layer of a block: its recipe's primitives in order (see :mod:`mnas.primitives`)."""

    def __init__(self, recipe: primitives.LayerRecipe) -> None:
        super().__init__()
        for step in recipe.steps:
            self.add_module(
                step.path if isinstance(step, primitives.Add) else step.name, _module(step)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for module in self.children():
            y = module(y, x) if isinstance(module, Shortcut) else module(y)
        return y


def _conv(step: primitives.Conv) -> ConvBN:
    return ConvBN(
        step.in_channels, step.out_channels, step.kernel, step.stride, activation=step.activation
    )


def _avg_pool(step: primitives.AvgPool) -> nn.Module:
    """Covered pixels only, as TensorFlow's "same" average pool."""
    return nn.AvgPool2d(step.stride, step.stride, ceil_mode=True, count_include_pad=False)


# Each primitive as a module (all but the add hold a primitive's own module path).
_MODULES: dict[type, Callable[[Any], nn.Module]] = {
    primitives.Conv: _conv,
    primitives.Depthwise: lambda step: ConvBN(
        step.channels,
        step.channels,
        step.kernel,
        step.stride,
        groups=step.channels,
        activation=step.activation,
    ),
    primitives.SqueezeExcite: lambda step: SqueezeExcite(step.channels, step.squeezed),
    primitives.AvgPool: _avg_pool,
    primitives.Add: lambda step: Shortcut(step.shortcut),
}


def _module(step: primitives.Primitive) -> nn.Module:
    return entry(_MODULES, type(step))(step)


def conv_init_std(conv: nn.Conv2d) -> float:
    """The official MnasNet convolution initialiser's spread: sqrt(2 / fan_out).

    TensorFlow's kernels are (kh, kw, in, out) and a depthwise kernel (kh, kw, channels, 1),
    so fan-out is kh * kw * out for a convolution and kh * kw for a depthwise one: per
    group, as timm's ``fix_group_fanout`` computes it. (``kaiming_normal_(mode="fan_out")``
    would count every group's outputs, starting depthwise kernels sqrt(C) too small.)
    """
    kh, kw = conv.kernel_size
    fan_out = kh * kw * conv.out_channels // conv.groups
    return math.sqrt(2.0 / fan_out)


class MnasModel(nn.Module):
    """Stem, blocks of layers, head (convolution, global average pool), dropout, classifier."""

    def __init__(
        self, arch: Architecture, *, num_classes: int, resolution: int, width: float
    ) -> None:
        super().__init__()
        net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
        self.arch = arch
        self.resolution = resolution
        self.num_classes = num_classes
        self.width = width
        self.stem = _conv(stem_conv(net))
        blocks: list[nn.Sequential] = []
        for b in range(len(arch.blocks)):
            layers = [Layer(layer_recipe(layer)) for layer in net.layers if layer.block == b]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv(head_conv(net))
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(net.head_channels, num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.blocks(self.stem(x))).mean((2, 3))
        logits: torch.Tensor = self.classifier(self.dropout(features))
        return logits

    def _init_weights(self) -> None:
        # The initialisation of the official MnasNet code: He-normal (fan out) convolutions,
        # uniform(-1/sqrt(out), 1/sqrt(out)) classifier.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, conv_init_std(module))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

"""Build a PyTorch module from an architecture.

``build_torch`` walks :func:`mnas.layers.plan`; the modules here only wire layers. Module
paths (``stem.conv``, ``blocks.3.1.dw.bn``, ``head.conv``, ``classifier``) are the layer
names of the Keras builder, so weights can be carried across by name.

Padding is TensorFlow's "same" (for stride 2 on even sizes, the extra row and column go
at the bottom and right), so both builders compute the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnas.arch import Activation, Architecture, Op
from mnas.layers import IMAGE_CHANNELS, STEM_KERNEL, STEM_STRIDE, LayerPlan, Shortcut, plan

__all__ = ["BN_EPS", "BN_MOMENTUM", "MnasModel", "build_torch", "conv_init_std"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras' 0.99


def build_torch(
    arch: Architecture, *, num_classes: int = 1000, resolution: int = 224, width: float = 1.0
) -> MnasModel:
    """A freshly initialised ``nn.Module`` for ``arch`` (NCHW input, logits out)."""
    return MnasModel(arch, num_classes=num_classes, resolution=resolution, width=width)


def _activation(kind: Activation) -> nn.Module:
    return nn.ReLU6(inplace=True) if kind is Activation.RELU6 else nn.ReLU(inplace=True)


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
        self.act = _activation(activation) if activation is not None else nn.Identity()

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


class PoolShortcut(nn.Module):
    """Average-pool to the stride (covered pixels only), then project channels if needed."""

    def __init__(self, layer: LayerPlan) -> None:
        super().__init__()
        self.pool: nn.Module = (
            nn.AvgPool2d(layer.stride, layer.stride, ceil_mode=True, count_include_pad=False)
            if layer.shortcut_pools
            else nn.Identity()
        )
        self.proj: nn.Module = (
            ConvBN(layer.in_channels, layer.out_channels, 1)
            if layer.shortcut_projects
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.proj(self.pool(x))
        return y


class Layer(nn.Module):
    """One layer of a block: conv, dconv or mbconv, optional SE, optional shortcut."""

    def __init__(self, layer: LayerPlan, activation: Activation) -> None:
        super().__init__()
        self.expand: nn.Module | None = None
        self.dw: nn.Module | None = None
        self.conv: nn.Module | None = None
        self.project: nn.Module | None = None
        if layer.op is Op.CONV:
            self.conv = ConvBN(
                layer.in_channels,
                layer.out_channels,
                layer.kernel,
                layer.stride,
                activation=activation,
            )
        else:
            if layer.expands:
                self.expand = ConvBN(
                    layer.in_channels, layer.mid_channels, 1, activation=activation
                )
            mid = layer.mid_channels
            self.dw = ConvBN(
                mid, mid, layer.kernel, layer.stride, groups=mid, activation=activation
            )
        self.se = (
            SqueezeExcite(layer.mid_channels, layer.se_channels) if layer.se_channels else None
        )
        if layer.op is not Op.CONV:
            self.project = ConvBN(layer.mid_channels, layer.out_channels, 1)
        self.residual = layer.shortcut is not Shortcut.NONE
        self.shortcut = PoolShortcut(layer) if layer.shortcut is Shortcut.POOL else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for stage in (self.expand, self.dw, self.conv, self.se, self.project):
            if stage is not None:
                y = stage(y)
        if not self.residual:
            return y
        return y + (self.shortcut(x) if self.shortcut is not None else x)


class Head(nn.Module):
    def __init__(self, cin: int, cout: int, activation: Activation) -> None:
        super().__init__()
        self.conv = SameConv2d(cin, cout, 1)
        self.bn = _bn(cout)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y.mean((2, 3))


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
    """Stem, blocks of layers, head, dropout, classifier."""

    def __init__(
        self, arch: Architecture, *, num_classes: int, resolution: int, width: float
    ) -> None:
        super().__init__()
        net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
        self.arch = arch
        self.resolution = resolution
        self.num_classes = num_classes
        self.width = width
        self.stem = ConvBN(
            IMAGE_CHANNELS, net.stem_channels, STEM_KERNEL, STEM_STRIDE, activation=arch.activation
        )
        blocks: list[nn.Sequential] = []
        for b in range(len(arch.blocks)):
            layers = [Layer(layer, arch.activation) for layer in net.layers if layer.block == b]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.head = Head(net.last_channels, net.head_channels, arch.activation)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(net.head_channels, num_classes)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.dropout(self.head(self.blocks(self.stem(x)))))
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

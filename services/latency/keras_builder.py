"""Build a Keras model from an architecture, for export to TFLite.

``build_keras`` walks :func:`mnas.layers.plan` exactly as the PyTorch builder does; the
helpers here only wire layers. Every layer that holds weights is named by the module path
of its PyTorch counterpart (``stem.conv``, ``blocks.3.1.dw.bn``, ``head.conv``,
``classifier``), so weights can be carried across by name.

"Same" padding is TensorFlow's own. The pooling shortcut's average pool excludes the
padding, as the PyTorch builder's ``ceil_mode=True, count_include_pad=False`` does; the two
place the windows alike for strides up to 2 (the search space's), where TensorFlow puts
any padding at the bottom and right.
"""

from __future__ import annotations

from typing import Any

import keras

from mnas.arch import Activation, Architecture, Op
from mnas.layers import IMAGE_CHANNELS, STEM_KERNEL, STEM_STRIDE, LayerPlan, Shortcut, plan

__all__ = ["BN_EPS", "BN_MOMENTUM", "build_keras"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.99  # PyTorch's 0.01

# The initialisers of the official MnasNet code: convolutions normal(0, sqrt(2 / fan_out)),
# the classifier uniform(-1/sqrt(out), 1/sqrt(out)).
_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
_DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}

Tensor = Any  # a symbolic Keras tensor


def build_keras(
    arch: Architecture,
    *,
    num_classes: int = 1000,
    resolution: int = 224,
    width: float = 1.0,
    batch_size: int | None = 1,
) -> keras.Model:
    """A freshly initialised functional model for ``arch`` (NHWC input, logits out).

    ``batch_size`` fixes the batch dimension (1 for on-device latency); ``None`` leaves it
    dynamic.
    """
    net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
    act = arch.activation
    image = keras.Input(
        (resolution, resolution, IMAGE_CHANNELS), batch_size=batch_size, name="image"
    )
    x = _conv_bn(image, "stem", net.stem_channels, STEM_KERNEL, STEM_STRIDE, act)
    for layer in net.layers:
        x = _layer(x, layer, act)
    x = _conv_bn(x, "head", net.head_channels, 1, 1, act)
    x = keras.layers.GlobalAveragePooling2D(name="head.pool")(x)
    x = keras.layers.Dropout(arch.dropout, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=_DENSE_INIT, name="classifier")(x)
    return keras.Model(image, logits, name=f"mnas_{arch.id}")


def _activation(kind: Activation, name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(max_value=6.0 if kind is Activation.RELU6 else None, name=name)


def _conv_bn(
    x: Tensor,
    name: str,
    filters: int,
    kernel: int,
    stride: int,
    activation: Activation | None,
    *,
    depthwise: bool = False,
) -> Tensor:
    """Convolution (``<name>.conv``), batch norm (``<name>.bn``), optional activation."""
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(
            kernel,
            stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=_CONV_INIT,
            name=f"{name}.conv",
        )
    else:
        conv = keras.layers.Conv2D(
            filters,
            kernel,
            stride,
            padding="same",
            use_bias=False,
            kernel_initializer=_CONV_INIT,
            name=f"{name}.conv",
        )
    x = conv(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPS, momentum=BN_MOMENTUM, name=f"{name}.bn")(x)
    return _activation(activation, f"{name}.act")(x) if activation is not None else x


def _squeeze_excite(x: Tensor, name: str, channels: int, squeezed: int) -> Tensor:
    """Gate ``x`` by a squeeze (``<name>.reduce``) and excite (``<name>.expand``) of its mean."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = keras.layers.Conv2D(squeezed, 1, kernel_initializer=_CONV_INIT, name=f"{name}.reduce")(s)
    s = keras.layers.ReLU(name=f"{name}.act")(s)
    s = keras.layers.Conv2D(
        channels, 1, activation="sigmoid", kernel_initializer=_CONV_INIT, name=f"{name}.expand"
    )(s)
    return keras.layers.Multiply(name=f"{name}.scale")([x, s])


def _pool_shortcut(x: Tensor, layer: LayerPlan) -> Tensor:
    """Average-pool to the stride (covered pixels only), then project channels if needed."""
    name = f"{layer.name}.shortcut"
    if layer.shortcut_pools:
        x = keras.layers.AveragePooling2D(
            layer.stride, layer.stride, padding="same", name=f"{name}.pool"
        )(x)
    if layer.shortcut_projects:
        x = _conv_bn(x, f"{name}.proj", layer.out_channels, 1, 1, None)
    return x


def _layer(x: Tensor, layer: LayerPlan, act: Activation) -> Tensor:
    """One layer of a block: conv, dconv or mbconv, optional SE, optional shortcut."""
    name, mid = layer.name, layer.mid_channels
    y = x
    if layer.op is Op.CONV:
        y = _conv_bn(y, f"{name}.conv", layer.out_channels, layer.kernel, layer.stride, act)
    else:
        if layer.expands:
            y = _conv_bn(y, f"{name}.expand", mid, 1, 1, act)
        y = _conv_bn(y, f"{name}.dw", mid, layer.kernel, layer.stride, act, depthwise=True)
    if layer.se_channels:
        y = _squeeze_excite(y, f"{name}.se", mid, layer.se_channels)
    if layer.op is not Op.CONV:
        y = _conv_bn(y, f"{name}.project", layer.out_channels, 1, 1, None)
    if layer.shortcut is Shortcut.NONE:
        return y
    shortcut = _pool_shortcut(x, layer) if layer.shortcut is Shortcut.POOL else x
    return keras.layers.Add(name=f"{name}.add")([y, shortcut])

"""Build a Keras model from an architecture, for export to TFLite.

``build_keras`` walks :func:`mnas.layers.plan` exactly as the PyTorch builder does and
builds each primitive of a layer's recipe (:mod:`mnas.primitives`) through one table; the
helpers here only wire layers. Every layer that holds weights is named by the module path
of its PyTorch counterpart (``stem.conv``, ``blocks.3.1.dw.bn``, ``head.conv``,
``classifier``), so weights can be carried across by name.

"Same" padding is TensorFlow's own. The pooling shortcut's average pool excludes the
padding, as the PyTorch builder's ``ceil_mode=True, count_include_pad=False`` does; the two
place the windows alike for strides up to 2 (the search space's), where TensorFlow puts
any padding at the bottom and right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from mnas import primitives
from mnas.arch import Activation, Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.layers import IMAGE_CHANNELS, plan
from mnas.primitives import entry, head_conv, layer_recipe, stem_conv

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
    num_classes: int = DEFAULT_NUM_CLASSES,
    resolution: int = DEFAULT_RESOLUTION,
    width: float = DEFAULT_WIDTH,
    batch_size: int | None = 1,
) -> keras.Model:
    """A freshly initialised functional model for ``arch`` (NHWC input, logits out).

    ``batch_size`` fixes the batch dimension (1 for on-device latency); ``None`` leaves it
    dynamic.
    """
    net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
    image = keras.Input(
        (resolution, resolution, IMAGE_CHANNELS), batch_size=batch_size, name="image"
    )
    x = _apply(stem_conv(net), image, "", image)
    for layer in net.layers:
        recipe = layer_recipe(layer)
        y = layer_input = x
        for step in recipe.steps:
            y = _apply(step, y, recipe.name + ".", layer_input)
        x = y
    x = _apply(head_conv(net), x, "", x)
    x = keras.layers.GlobalAveragePooling2D(name="head.pool")(x)
    x = keras.layers.Dropout(arch.dropout, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, kernel_initializer=_DENSE_INIT, name="classifier")(x)
    return keras.Model(image, logits, name=f"mnas_{arch.id}")


# Each activation as a layer.
_ACTIVATIONS: dict[Activation, Callable[[str], keras.layers.Layer]] = {
    Activation.RELU: lambda name: keras.layers.ReLU(name=name),
    Activation.RELU6: lambda name: keras.layers.ReLU(max_value=6.0, name=name),
    Activation.HARD_SWISH: lambda name: keras.layers.Activation("hard_swish", name=name),
}


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
    if activation is None:
        return x
    return entry(_ACTIVATIONS, activation)(f"{name}.act")(x)


def _conv(step: primitives.Conv, x: Tensor, name: str, _: Tensor) -> Tensor:
    return _conv_bn(x, name, step.out_channels, step.kernel, step.stride, step.activation)


def _depthwise(step: primitives.Depthwise, x: Tensor, name: str, _: Tensor) -> Tensor:
    return _conv_bn(
        x, name, step.channels, step.kernel, step.stride, step.activation, depthwise=True
    )


def _squeeze_excite(step: primitives.SqueezeExcite, x: Tensor, name: str, _: Tensor) -> Tensor:
    """Gate ``x`` by a squeeze (``<name>.reduce``) and excite (``<name>.expand``) of its mean."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    s = keras.layers.Conv2D(step.squeezed, 1, kernel_initializer=_CONV_INIT, name=f"{name}.reduce")(
        s
    )
    s = keras.layers.ReLU(name=f"{name}.act")(s)
    s = keras.layers.Conv2D(
        step.channels,
        1,
        activation="sigmoid",
        kernel_initializer=_CONV_INIT,
        name=f"{name}.expand",
    )(s)
    return keras.layers.Multiply(name=f"{name}.scale")([x, s])


def _avg_pool(step: primitives.AvgPool, x: Tensor, name: str, _: Tensor) -> Tensor:
    """Covered pixels only: TensorFlow's "same" average pool excludes the padding."""
    return keras.layers.AveragePooling2D(step.stride, step.stride, padding="same", name=name)(x)


def _add(step: primitives.Add, y: Tensor, name: str, layer_input: Tensor) -> Tensor:
    """``y`` plus the layer's input through the shortcut path (named ``<layer>.shortcut.*``)."""
    prefix = f"{name.rpartition('.')[0]}.{step.path}."  # beside the add, in its layer
    shortcut = layer_input
    for part in step.shortcut:
        shortcut = _apply(part, shortcut, prefix, layer_input)
    return keras.layers.Add(name=name)([y, shortcut])


# Each primitive as layers: (primitive, its input, its name, the layer's input) -> output.
_LAYERS: dict[type, Callable[[Any, Tensor, str, Tensor], Tensor]] = {
    primitives.Conv: _conv,
    primitives.Depthwise: _depthwise,
    primitives.SqueezeExcite: _squeeze_excite,
    primitives.AvgPool: _avg_pool,
    primitives.Add: _add,
}


def _apply(step: primitives.Primitive, x: Tensor, prefix: str, layer_input: Tensor) -> Tensor:
    """``step`` on ``x``, its layers named ``<prefix><step.name>``."""
    return entry(_LAYERS, type(step))(step, x, prefix + step.name, layer_input)

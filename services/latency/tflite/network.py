"""The TFLite graph of a network plan: the Keras builder's network, batch norm folded.

This walks :func:`mnas.layers.plan` as ``services.latency.keras_builder`` does, each
primitive of a layer's recipe (:mod:`mnas.primitives`) through one table, and emits what
``TFLiteConverter`` makes of that Keras model, in the same order: every
convolution with its batch norm folded in and its activation fused (or, one TFLite does
not fuse, as the operator after it), "same" padding
except the squeeze-and-excite convolutions ("valid", as Keras' default), the SE gate as
``MEAN``, two ``CONV_2D``, ``LOGISTIC`` and ``MUL``, dropout gone, the head's global pool
as ``MEAN`` and the classifier as ``FULLY_CONNECTED``.

One difference, where a layer's output shrinks to 1x1: there the converter also turns
residual adds into a reshape and a bias add and drops the SE's mean over one pixel; this
graph keeps the plain operators. The outputs agree, and it takes an input no larger
than the network's total stride (32 for the reference networks) to get there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnas import primitives
from mnas.arch import Activation
from mnas.layers import IMAGE_CHANNELS, NetworkPlan
from mnas.primitives import entry, head_conv, layer_recipe, stem_conv
from services.latency.tflite.graph import (
    Builtin,
    FusedActivation,
    Graph,
    GraphBuilder,
    Padding,
    Tensor,
)
from services.latency.tflite.weights import WeightSource

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "network_graph"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class _Activation:
    """How an activation follows a convolution: fused into it, or as an operator after it."""

    fused: FusedActivation = FusedActivation.NONE
    operator: int | None = None  # an elementwise builtin applied to the convolution's output


# Each activation as TFLite applies it.
_ACTIVATIONS: dict[Activation, _Activation] = {
    Activation.RELU: _Activation(fused=FusedActivation.RELU),
    Activation.RELU6: _Activation(fused=FusedActivation.RELU6),
    Activation.HARD_SWISH: _Activation(operator=Builtin.HARD_SWISH),
}
_LINEAR = _Activation()


def network_graph(net: NetworkPlan, weights: WeightSource, *, batch_size: int = 1) -> Graph:
    """The operator graph of ``net`` at ``batch_size``, weights drawn from ``weights``."""
    image = Tensor(INPUT_NAME, (batch_size, net.resolution, net.resolution, IMAGE_CHANNELS))
    emit = _Emitter(GraphBuilder(image), weights)
    x = emit(stem_conv(net), image, "", image)
    for layer in net.layers:
        recipe = layer_recipe(layer)
        y = x
        for step in recipe.steps:
            y = emit(step, y, recipe.name + ".", x)
        x = y
    x = emit(head_conv(net), x, "", x)
    x = emit.graph.spatial_mean("head.pool", x, keep_dims=False)
    kernel, bias = weights.dense("classifier", net.head_channels, net.num_classes)
    logits = emit.graph.fully_connected(OUTPUT_NAME, x, kernel, bias)
    emit.graph.graph.outputs.append(logits)
    return emit.graph.graph


class _Emitter:
    """Emits each primitive as operators over a graph builder and a weight source."""

    def __init__(self, graph: GraphBuilder, weights: WeightSource):
        self.graph = graph
        self.weights = weights
        # (primitive, its input, its name, the layer's input) -> output
        self._table: dict[type, Callable[[Any, Tensor, str, Tensor], Tensor]] = {
            primitives.Conv: self.conv,
            primitives.Depthwise: self.depthwise,
            primitives.SqueezeExcite: self.squeeze_excite,
            primitives.AvgPool: self.average_pool,
            primitives.Add: self.add,
        }

    def __call__(
        self, step: primitives.Primitive, x: Tensor, prefix: str, layer_input: Tensor
    ) -> Tensor:
        """``step`` on ``x``, its operators named ``<prefix><step.name>``."""
        return entry(self._table, type(step))(step, x, prefix + step.name, layer_input)

    def conv(self, step: primitives.Conv, x: Tensor, name: str, _: Tensor) -> Tensor:
        """Convolution ``<name>.conv`` with batch norm ``<name>.bn`` folded in."""
        act = self._activation(step.activation)
        w, bias = self.weights.conv(
            name, step.kernel, step.in_channels, step.out_channels, batch_norm=True
        )
        y = self.graph.conv(name, x, w, bias, stride=step.stride, activation=act.fused)
        return self._after(act, name, y)

    def depthwise(self, step: primitives.Depthwise, x: Tensor, name: str, _: Tensor) -> Tensor:
        act = self._activation(step.activation)
        dw, bias = self.weights.depthwise(name, step.kernel, step.channels)
        y = self.graph.depthwise_conv(name, x, dw, bias, stride=step.stride, activation=act.fused)
        return self._after(act, name, y)

    def squeeze_excite(
        self, step: primitives.SqueezeExcite, x: Tensor, name: str, _: Tensor
    ) -> Tensor:
        s = self.graph.spatial_mean(f"{name}.pool", x, keep_dims=True)
        for part, out, act in (
            ("reduce", step.squeezed, FusedActivation.RELU),
            ("expand", step.channels, FusedActivation.NONE),
        ):
            w, bias = self.weights.conv(f"{name}.{part}", 1, s.shape[3], out, batch_norm=False)
            s = self.graph.conv(f"{name}.{part}", s, w, bias, padding=Padding.VALID, activation=act)
        gate = self.graph.logistic(f"{name}.gate", s)
        return self.graph.mul(f"{name}.scale", x, gate)

    def average_pool(self, step: primitives.AvgPool, x: Tensor, name: str, _: Tensor) -> Tensor:
        return self.graph.average_pool(name, x, step.stride)

    def add(self, step: primitives.Add, y: Tensor, name: str, layer_input: Tensor) -> Tensor:
        """``y`` plus the layer's input through the shortcut (named ``<layer>.shortcut.*``)."""
        prefix = f"{name.rpartition('.')[0]}.{step.path}."  # beside the add, in its layer
        shortcut = layer_input
        for part in step.shortcut:
            shortcut = self(part, shortcut, prefix, layer_input)
        return self.graph.add(name, y, shortcut)

    @staticmethod
    def _activation(kind: Activation | None) -> _Activation:
        return _LINEAR if kind is None else entry(_ACTIVATIONS, kind)

    def _after(self, act: _Activation, name: str, x: Tensor) -> Tensor:
        return x if act.operator is None else self.graph.unary(act.operator, f"{name}.act", x)

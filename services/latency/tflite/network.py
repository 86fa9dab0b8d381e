"""The TFLite graph of a network plan: the Keras builder's network, batch norm folded.

This walks :func:`mnas.layers.plan` as ``services.latency.keras_builder`` does and emits
what ``TFLiteConverter`` makes of that Keras model, in the same order: every
convolution with its batch norm folded in and its activation fused, "same" padding
except the squeeze-and-excite convolutions ("valid", as Keras' default), the SE gate as
``MEAN``, two ``CONV_2D``, ``LOGISTIC`` and ``MUL``, dropout gone, the head's global pool
as ``MEAN`` and the classifier as ``FULLY_CONNECTED``.

One difference, where a layer's output shrinks to 1x1: there the converter also turns
residual adds into a reshape and a bias add and drops the SE's mean over one pixel; this
graph keeps the plain operators. The outputs agree, and it takes an input no larger
than the network's total stride (32 for the reference networks) to get there.
"""

from __future__ import annotations

from mnas.arch import Activation, Op
from mnas.layers import IMAGE_CHANNELS, STEM_KERNEL, STEM_STRIDE, LayerPlan, NetworkPlan, Shortcut
from services.latency.tflite.graph import FusedActivation, Graph, GraphBuilder, Padding, Tensor
from services.latency.tflite.weights import WeightSource

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "network_graph"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"

_FUSED = {Activation.RELU: FusedActivation.RELU, Activation.RELU6: FusedActivation.RELU6}


def network_graph(net: NetworkPlan, weights: WeightSource, *, batch_size: int = 1) -> Graph:
    """The operator graph of ``net`` at ``batch_size``, weights drawn from ``weights``."""
    image = Tensor(INPUT_NAME, (batch_size, net.resolution, net.resolution, IMAGE_CHANNELS))
    emit = _Emitter(GraphBuilder(image), weights, _FUSED[net.activation])
    x = emit.conv_bn(image, "stem", net.stem_channels, STEM_KERNEL, STEM_STRIDE, emit.act)
    for layer in net.layers:
        x = emit.layer(x, layer)
    x = emit.conv_bn(x, "head", net.head_channels, 1, 1, emit.act)
    x = emit.graph.spatial_mean("head.pool", x, keep_dims=False)
    kernel, bias = weights.dense("classifier", net.head_channels, net.num_classes)
    logits = emit.graph.fully_connected(OUTPUT_NAME, x, kernel, bias)
    emit.graph.graph.outputs.append(logits)
    return emit.graph.graph


class _Emitter:
    """The network's building blocks over a graph builder and a weight source."""

    def __init__(self, graph: GraphBuilder, weights: WeightSource, act: FusedActivation):
        self.graph = graph
        self.weights = weights
        self.act = act

    def conv_bn(
        self,
        x: Tensor,
        name: str,
        filters: int,
        kernel: int,
        stride: int,
        activation: FusedActivation,
        *,
        depthwise: bool = False,
    ) -> Tensor:
        """Convolution ``<name>.conv`` with batch norm ``<name>.bn`` folded in."""
        channels = x.shape[3]
        if depthwise:
            dw, bias = self.weights.depthwise(name, kernel, channels)
            return self.graph.depthwise_conv(
                name, x, dw, bias, stride=stride, activation=activation
            )
        w, bias = self.weights.conv(name, kernel, channels, filters, batch_norm=True)
        return self.graph.conv(name, x, w, bias, stride=stride, activation=activation)

    def squeeze_excite(self, x: Tensor, name: str, squeezed: int) -> Tensor:
        channels = x.shape[3]
        s = self.graph.spatial_mean(f"{name}.pool", x, keep_dims=True)
        for part, out, act in (
            ("reduce", squeezed, FusedActivation.RELU),
            ("expand", channels, FusedActivation.NONE),
        ):
            w, bias = self.weights.conv(f"{name}.{part}", 1, s.shape[3], out, batch_norm=False)
            s = self.graph.conv(f"{name}.{part}", s, w, bias, padding=Padding.VALID, activation=act)
        gate = self.graph.logistic(f"{name}.gate", s)
        return self.graph.mul(f"{name}.scale", x, gate)

    def layer(self, x: Tensor, layer: LayerPlan) -> Tensor:
        """One layer of a block: conv, dconv or mbconv, optional SE, optional shortcut."""
        name, mid = layer.name, layer.mid_channels
        y = x
        if layer.op is Op.CONV:
            y = self.conv_bn(
                y, f"{name}.conv", layer.out_channels, layer.kernel, layer.stride, self.act
            )
        else:
            if layer.expands:
                y = self.conv_bn(y, f"{name}.expand", mid, 1, 1, self.act)
            y = self.conv_bn(
                y, f"{name}.dw", mid, layer.kernel, layer.stride, self.act, depthwise=True
            )
        if layer.se_channels:
            y = self.squeeze_excite(y, f"{name}.se", layer.se_channels)
        if layer.op is not Op.CONV:
            y = self.conv_bn(y, f"{name}.project", layer.out_channels, 1, 1, FusedActivation.NONE)
        if layer.shortcut is Shortcut.NONE:
            return y
        shortcut = x
        if layer.shortcut is Shortcut.POOL:
            if layer.shortcut_pools:
                shortcut = self.graph.average_pool(f"{name}.shortcut.pool", shortcut, layer.stride)
            if layer.shortcut_projects:
                shortcut = self.conv_bn(
                    shortcut,
                    f"{name}.shortcut.proj",
                    layer.out_channels,
                    1,
                    1,
                    FusedActivation.NONE,
                )
        return self.graph.add(f"{name}.add", y, shortcut)

"""A TFLite operator graph in memory: tensors, operators, and a builder that emits them.

The builder knows the TFLite form of each operator a network of ours needs (layouts,
options, fused activations, padding) and nothing of networks; :mod:`.network` walks the
plan through it. The operators and options are those ``TFLiteConverter`` writes for the
same Keras layers, batch norm already folded into the convolutions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["FusedActivation", "Graph", "GraphBuilder", "Operator", "Padding", "Tensor"]

Builtin = schema.BuiltinOperator


class Padding(enum.IntEnum):
    SAME = schema.Padding.SAME
    VALID = schema.Padding.VALID


class FusedActivation(enum.IntEnum):
    """Activations TFLite fuses into the operator before them."""

    NONE = schema.ActivationFunctionType.NONE
    RELU = schema.ActivationFunctionType.RELU
    RELU6 = schema.ActivationFunctionType.RELU6


@dataclass(eq=False)
class Tensor:
    """A tensor of the graph; ``data`` holds a constant's values (in ``shape``)."""

    name: str
    shape: tuple[int, ...]
    type: int = schema.TensorType.FLOAT32
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Operator:
    """A builtin operator; ``options`` is a schema options table (``Conv2DOptionsT``, ...)."""

    code: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    options_type: int = schema.BuiltinOptions.NONE
    options: Any = None


@dataclass
class Graph:
    """Operators in execution order, with the graph's input and output tensors."""

    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)


class GraphBuilder:
    """Appends operators to a graph; each method returns the operator's output tensor."""

    def __init__(self, image: Tensor) -> None:
        self.graph = Graph(inputs=[image])
        self._mean_axes: Tensor | None = None

    def conv(
        self,
        name: str,
        x: Tensor,
        filters: np.ndarray,
        bias: np.ndarray,
        *,
        stride: int = 1,
        padding: Padding = Padding.SAME,
        activation: FusedActivation = FusedActivation.NONE,
    ) -> Tensor:
        """``CONV_2D`` with an OHWI filter and a bias."""
        out_channels, kernel, _, _ = filters.shape
        options = schema.Conv2DOptionsT()
        options.padding = padding
        options.strideH = options.strideW = stride
        options.fusedActivationFunction = activation
        out = self._windowed_output(name, x, out_channels, kernel, stride, padding)
        self._append(
            Builtin.CONV_2D,
            (x, _constant(f"{name}/filter", filters), _constant(f"{name}/bias", bias)),
            out,
            schema.BuiltinOptions.Conv2DOptions,
            options,
        )
        return out

    def depthwise_conv(
        self,
        name: str,
        x: Tensor,
        filters: np.ndarray,
        bias: np.ndarray,
        *,
        stride: int,
        activation: FusedActivation,
    ) -> Tensor:
        """``DEPTHWISE_CONV_2D`` (multiplier 1, "same" padding) with a 1HWC filter."""
        _, kernel, _, channels = filters.shape
        options = schema.DepthwiseConv2DOptionsT()
        options.padding = Padding.SAME
        options.strideH = options.strideW = stride
        options.depthMultiplier = 1
        options.fusedActivationFunction = activation
        out = self._windowed_output(name, x, channels, kernel, stride, Padding.SAME)
        self._append(
            Builtin.DEPTHWISE_CONV_2D,
            (x, _constant(f"{name}/filter", filters), _constant(f"{name}/bias", bias)),
            out,
            schema.BuiltinOptions.DepthwiseConv2DOptions,
            options,
        )
        return out

    def average_pool(self, name: str, x: Tensor, size: int) -> Tensor:
        """``AVERAGE_POOL_2D``, window and stride ``size``, "same" padding (covered pixels)."""
        options = schema.Pool2DOptionsT()
        options.padding = Padding.SAME
        options.strideH = options.strideW = size
        options.filterHeight = options.filterWidth = size
        out = self._windowed_output(name, x, x.shape[3], size, size, Padding.SAME)
        self._append(
            Builtin.AVERAGE_POOL_2D, (x,), out, schema.BuiltinOptions.Pool2DOptions, options
        )
        return out

    def spatial_mean(self, name: str, x: Tensor, *, keep_dims: bool) -> Tensor:
        """``MEAN`` over height and width; one axes constant serves every mean."""
        if self._mean_axes is None:
            self._mean_axes = _constant(
                "mean_axes", np.array([1, 2], np.int32), schema.TensorType.INT32
            )
        options = schema.ReducerOptionsT()
        options.keepDims = keep_dims
        batch, _, _, channels = x.shape
        shape = (batch, 1, 1, channels) if keep_dims else (batch, channels)
        out = Tensor(name, shape)
        self._append(
            Builtin.MEAN,
            (x, self._mean_axes),
            out,
            schema.BuiltinOptions.ReducerOptions,
            options,
        )
        return out

    def unary(self, code: int, name: str, x: Tensor) -> Tensor:
        """An elementwise builtin without options (``LOGISTIC``, ...) on ``x``."""
        out = Tensor(name, x.shape)
        self._append(code, (x,), out)
        return out

    def logistic(self, name: str, x: Tensor) -> Tensor:
        return self.unary(Builtin.LOGISTIC, name, x)

    def mul(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        """``MUL`` of ``x`` by ``y`` broadcast to ``x``'s shape."""
        out = Tensor(name, x.shape)
        options = schema.MulOptionsT()
        self._append(Builtin.MUL, (x, y), out, schema.BuiltinOptions.MulOptions, options)
        return out

    def add(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        out = Tensor(name, x.shape)
        options = schema.AddOptionsT()
        options.potScaleInt16 = True
        self._append(Builtin.ADD, (x, y), out, schema.BuiltinOptions.AddOptions, options)
        return out

    def fully_connected(
        self, name: str, x: Tensor, weights: np.ndarray, bias: np.ndarray
    ) -> Tensor:
        """``FULLY_CONNECTED`` with ``(out, in)`` weights and a bias."""
        out = Tensor(name, (x.shape[0], weights.shape[0]))
        options = schema.FullyConnectedOptionsT()
        self._append(
            Builtin.FULLY_CONNECTED,
            (x, _constant(f"{name}/weights", weights), _constant(f"{name}/bias", bias)),
            out,
            schema.BuiltinOptions.FullyConnectedOptions,
            options,
        )
        return out

    def _append(
        self,
        code: int,
        inputs: tuple[Tensor, ...],
        out: Tensor,
        options_type: int = schema.BuiltinOptions.NONE,
        options: Any = None,
    ) -> None:
        self.graph.operators.append(Operator(code, inputs, (out,), options_type, options))

    @staticmethod
    def _windowed_output(
        name: str, x: Tensor, channels: int, kernel: int, stride: int, padding: Padding
    ) -> Tensor:
        """The NHWC output tensor of a windowed operator on ``x``."""
        batch, height, width, _ = x.shape
        return Tensor(
            name,
            (
                batch,
                _out_size(height, kernel, stride, padding),
                _out_size(width, kernel, stride, padding),
                channels,
            ),
        )


def _out_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    if padding is Padding.SAME:
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _constant(name: str, data: np.ndarray, type_: int = schema.TensorType.FLOAT32) -> Tensor:
    dtype = "<i4" if type_ == schema.TensorType.INT32 else "<f4"
    return Tensor(name, tuple(data.shape), type_, np.ascontiguousarray(data, dtype=dtype))

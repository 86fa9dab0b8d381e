"""Where the direct writer's weights come from: seeded random draws, or a trained model's.

A weight source answers for one layer at a time, named by the module path both builders
use (``stem``, ``blocks.2.0.expand``, ``blocks.2.0.se.reduce``, ``classifier``), and
returns arrays in TFLite's layouts with batch norm already folded in: convolution filters
OHWI, depthwise filters 1HWC, fully connected weights ``(out, in)``, float32.

Latency does not depend on the values, so production exports draw them
(:class:`RandomWeights`); :class:`FoldedWeights` carries a Keras model's weights across
so that a direct export can be checked against the converter's output for the same
weights.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

__all__ = ["BN_EPS", "FoldedWeights", "RandomWeights", "WeightSource"]

BN_EPS = 1e-3  # the Keras builder's batch-norm epsilon

Pair = tuple[np.ndarray, np.ndarray]


class WeightSource(Protocol):
    """Folded weights and bias of each layer, in TFLite layouts."""

    def conv(
        self, name: str, kernel: int, in_channels: int, out_channels: int, *, batch_norm: bool
    ) -> Pair:
        """OHWI filter and bias of a regular convolution.

        With ``batch_norm`` the layer is the convolution ``<name>.conv`` (no bias) and
        the batch norm ``<name>.bn`` folded into it; without, the convolution ``<name>``
        with its own bias.
        """
        ...

    def depthwise(self, name: str, kernel: int, channels: int) -> Pair:
        """1HWC filter and bias of ``<name>.conv`` (depthwise) with ``<name>.bn`` folded in."""
        ...

    def dense(self, name: str, in_features: int, out_features: int) -> Pair:
        """``(out, in)`` weights and bias of the fully connected layer ``name``."""
        ...


class RandomWeights:
    """He-uniform filters (variance 2 / fan-in) and zero biases, as a fresh model folds to.

    Each layer's draw depends only on the seed and the layer's name, so one source gives
    the same file every time and holds no state.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def conv(
        self, name: str, kernel: int, in_channels: int, out_channels: int, *, batch_norm: bool
    ) -> Pair:
        shape = (out_channels, kernel, kernel, in_channels)
        return self._he_uniform(name, shape, kernel * kernel * in_channels), _zeros(out_channels)

    def depthwise(self, name: str, kernel: int, channels: int) -> Pair:
        shape = (1, kernel, kernel, channels)
        return self._he_uniform(name, shape, kernel * kernel), _zeros(channels)

    def dense(self, name: str, in_features: int, out_features: int) -> Pair:
        weights = self._he_uniform(name, (out_features, in_features), in_features)
        return weights, _zeros(out_features)

    def _he_uniform(self, name: str, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """Uniform on [-a, a), a = sqrt(6 / fan_in): cheaper to draw than a normal."""
        rng = np.random.default_rng((self.seed, zlib.crc32(name.encode())))
        values = rng.random(shape, dtype=np.float32)
        values -= np.float32(0.5)
        values *= np.float32(2.0 * math.sqrt(6.0 / fan_in))
        return values


class FoldedWeights:
    """A trained model's weights, by Keras layer name, folded into TFLite layouts.

    ``weights`` maps each layer's name to its weights in Keras order and layouts, as
    ``{layer.name: layer.get_weights()}`` gives them: convolution kernels HWIO (depthwise
    HWC1) then the bias if any; batch norm gamma, beta, moving mean, moving variance;
    dense kernel ``(in, out)`` then bias.
    """

    def __init__(self, weights: Mapping[str, Sequence[np.ndarray]], *, eps: float = BN_EPS):
        self._weights = weights
        self._eps = eps

    def conv(
        self, name: str, kernel: int, in_channels: int, out_channels: int, *, batch_norm: bool
    ) -> Pair:
        expected = (kernel, kernel, in_channels, out_channels)
        if batch_norm:
            hwio = self._array(f"{name}.conv", 0, expected)
            hwio, bias = self._fold(hwio, f"{name}.bn", out_channels)
        else:
            hwio = self._array(name, 0, expected)
            bias = self._array(name, 1, (out_channels,))
        return _f32(hwio.transpose(3, 0, 1, 2)), _f32(bias)

    def depthwise(self, name: str, kernel: int, channels: int) -> Pair:
        hwc1 = self._array(f"{name}.conv", 0, (kernel, kernel, channels, 1))
        hwc1, bias = self._fold(hwc1, f"{name}.bn", channels, axis=2)
        return _f32(hwc1.transpose(3, 0, 1, 2)), _f32(bias)

    def dense(self, name: str, in_features: int, out_features: int) -> Pair:
        kernel = self._array(name, 0, (in_features, out_features))
        return _f32(kernel.T), _f32(self._array(name, 1, (out_features,)))

    def _fold(
        self, kernel: np.ndarray, bn: str, channels: int, axis: int = 3
    ) -> tuple[np.ndarray, np.ndarray]:
        gamma, beta, mean, variance = (self._array(bn, i, (channels,)) for i in range(4))
        scale = gamma / np.sqrt(variance + self._eps)
        shape = [1] * kernel.ndim
        shape[axis] = channels
        return kernel * scale.reshape(shape), beta - mean * scale

    def _array(self, layer: str, index: int, shape: tuple[int, ...]) -> np.ndarray:
        try:
            values = self._weights[layer]
        except KeyError:
            raise KeyError(f"weights: no layer {layer!r}") from None
        if index >= len(values):
            raise ValueError(f"weights[{layer!r}]: {len(values)} arrays, expected {index + 1}+")
        array = np.asarray(values[index], dtype=np.float64)
        if array.shape != shape:
            raise ValueError(f"weights[{layer!r}][{index}]: shape {array.shape}, expected {shape}")
        return array


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, np.float32)


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)

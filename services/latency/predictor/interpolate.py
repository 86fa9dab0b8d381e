"""Estimates for layer kernels the table lacks, fitted on the kernels it has.

A ridge regression of seconds on what a layer does, summed over the primitives of its
recipe (:func:`mnas.primitives.layer_recipe`): each primitive type adds to named columns
(:data:`COLUMNS`) through one table, its multiply-adds and the elements it reads and
writes, per kind (full and pointwise convolutions, depthwise, SE, pooling, the
shortcut's addition). The fit weighs relative error, as kernels span two orders of
magnitude, and leaves out kernels measured at 0. One fit per (op, stride) with at least
:data:`MIN_GROUP` kernels, one over all layers for the rest. Rough (see docs/predictor.md
for its held-out error): a table that covers the search space needs none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mnas.cost import primitive_cost
from mnas.layers import plan
from mnas.primitives import (
    Add,
    AvgPool,
    Conv,
    Depthwise,
    Primitive,
    SqueezeExcite,
    entry,
    layer_recipe,
)
from services.latency.predictor.kernels import Kernel, LayerKernel
from services.latency.predictor.probes import probes

__all__ = [
    "COLUMNS",
    "MIN_GROUP",
    "PRIMITIVE_FEATURES",
    "KernelInterpolator",
    "layer_features",
    "primitive_features",
]

MIN_GROUP = 30
_RIDGE = 1e-6
_FLOOR = 0.25

# The feature vector's columns in order; the last is the constant 1.
COLUMNS = (
    "conv_macs",
    "conv_read",
    "conv_written",
    "pointwise_macs",
    "pointwise_read",
    "pointwise_written",
    "depthwise_macs",
    "depthwise_read",
    "depthwise_written",
    "se_macs",
    "se_elements",
    "pool_elements",
    "add_elements",
    "constant",
)
_INDEX = {name: i for i, name in enumerate(COLUMNS)}

Group = tuple[str, int] | None
Contribution = dict[str, int]


def layer_features(kernel: LayerKernel) -> np.ndarray:
    """What the layer computes and moves, per :data:`COLUMNS`, from the probe that
    reproduces it."""
    probe, _ = probes(kernel)
    (layer,) = plan(probe.arch, width=1.0, resolution=probe.resolution, num_classes=1).layers
    values = np.zeros(len(COLUMNS))
    values[_INDEX["constant"]] = 1.0
    for step in layer_recipe(layer).steps:
        for column, amount in primitive_features(step).items():
            values[_INDEX[column]] += amount
    return values


def primitive_features(step: Primitive) -> Contribution:
    """One primitive's share of the columns (those it leaves out: 0)."""
    return entry(PRIMITIVE_FEATURES, type(step))(step)


def _conv(step: Conv) -> Contribution:
    # The input the strided windows cover: the input itself, but for the odd last row
    # and column a stride-2 "same" convolution may skip.
    kind = "pointwise" if step.kernel == 1 else "conv"
    covered = (step.out_size * step.stride) ** 2
    return {
        f"{kind}_macs": primitive_cost(step).macs,
        f"{kind}_read": covered * step.in_channels,
        f"{kind}_written": step.out_size**2 * step.out_channels,
    }


def _depthwise(step: Depthwise) -> Contribution:
    return {
        "depthwise_macs": primitive_cost(step).macs,
        "depthwise_read": (step.out_size * step.stride) ** 2 * step.channels,
        "depthwise_written": step.out_size**2 * step.channels,
    }


def _squeeze_excite(step: SqueezeExcite) -> Contribution:
    return {
        "se_macs": primitive_cost(step).macs,
        "se_elements": step.size**2 * step.channels,
    }


def _avg_pool(step: AvgPool) -> Contribution:
    return {"pool_elements": (step.out_size * step.stride) ** 2 * step.channels}


def _add(step: Add) -> Contribution:
    total: Contribution = {"add_elements": step.size**2 * step.channels}
    for part in step.shortcut:
        for column, amount in primitive_features(part).items():
            total[column] = total.get(column, 0) + amount
    return total


# One entry per primitive type: its share of the columns. A new primitive needs one here.
PRIMITIVE_FEATURES: dict[type, Callable[[Any], Contribution]] = {
    Conv: _conv,
    Depthwise: _depthwise,
    SqueezeExcite: _squeeze_excite,
    AvgPool: _avg_pool,
    Add: _add,
}


def _group(kernel: LayerKernel) -> tuple[str, int]:
    return (kernel.op, kernel.stride)


class KernelInterpolator:
    """Fitted once on a table's layer kernels; then estimates any layer kernel."""

    def __init__(self, table: Mapping[Kernel, float]) -> None:
        points: dict[Group, list[tuple[np.ndarray, float]]] = {None: []}
        for kernel, seconds in table.items():
            # 0 is a difference of probes floored there, not a time: nothing to fit.
            if isinstance(kernel, LayerKernel) and seconds > 0:
                point = (layer_features(kernel), seconds)
                points.setdefault(_group(kernel), []).append(point)
                points[None].append(point)
        if not points[None]:
            raise KeyError(
                "interpolation needs calibrated layer kernels above 0 seconds; the table has none"
            )
        self._fits = {
            group: _ridge(pts)
            for group, pts in points.items()
            if group is None or len(pts) >= MIN_GROUP
        }

    def __call__(self, kernel: LayerKernel) -> float:
        coefficients = self._fits.get(_group(kernel), self._fits[None])
        return max(0.0, float(coefficients @ layer_features(kernel)))


def _ridge(points: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Least squares of relative error: each kernel weighted by 1 / its seconds, floored
    at :data:`_FLOOR` times the group's median so kernels measured near zero (a
    difference of two noisy probes) do not dominate."""
    x = np.stack([p[0] for p in points])
    y = np.array([p[1] for p in points])
    floor = _FLOOR * float(np.median(y))
    if floor > 0:
        weights = 1.0 / np.maximum(y, floor)
        x, y = x * weights[:, None], y * weights
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    z = x / scale
    gram = z.T @ z + _RIDGE * len(y) * np.eye(x.shape[1])
    return np.asarray(np.linalg.lstsq(gram, z.T @ y, rcond=None)[0] / scale)

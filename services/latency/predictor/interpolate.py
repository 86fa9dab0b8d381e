"""Estimates for layer kernels the table lacks, fitted on the kernels it has.

A ridge regression of seconds on what a layer does: pointwise and depthwise
multiply-adds, the activations it reads and writes (input, expanded, depthwise output,
output), and what SE, the shortcut's addition and its pooling touch. One fit per (op,
stride) with at least :data:`MIN_GROUP` kernels, one over all layers for the rest.
Unbiased but rough (about 15% mean error per kernel on the host, less on a network's sum):
a table that covers the search space needs none of it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mnas.cost import layer_cost, primitive_cost
from mnas.layers import plan
from mnas.primitives import Depthwise, layer_recipe
from services.latency.predictor.kernels import Kernel, LayerKernel
from services.latency.predictor.probes import probes

__all__ = ["MIN_GROUP", "KernelInterpolator", "layer_features"]

MIN_GROUP = 30
_RIDGE = 1e-6

Group = tuple[str, int] | None


def layer_features(kernel: LayerKernel) -> np.ndarray:
    """What the layer computes and moves, from the probe that reproduces it; last: 1."""
    probe, _ = probes(kernel)
    (layer,) = plan(probe.arch, width=1.0, resolution=probe.resolution, num_classes=1).layers
    steps = layer_recipe(layer).steps
    depthwise = sum(primitive_cost(s).macs for s in steps if isinstance(s, Depthwise))
    pointwise = layer_cost(layer).macs - depthwise
    read = layer.in_size**2 * layer.in_channels
    expanded = layer.in_size**2 * layer.mid_channels if layer.expands else 0
    middle = layer.out_size**2 * layer.mid_channels
    written = layer.out_size**2 * layer.out_channels
    se = middle if layer.se_channels else 0
    added = written if layer.shortcut.value != "none" else 0
    pooled = read if layer.shortcut_pools else 0
    values = (pointwise, depthwise, read, expanded, middle, written, se, added, pooled, 1)
    return np.array(values, dtype=float)


def _group(kernel: LayerKernel) -> tuple[str, int]:
    return (kernel.op, kernel.stride)


class KernelInterpolator:
    """Fitted once on a table's layer kernels; then estimates any layer kernel."""

    def __init__(self, table: Mapping[Kernel, float]) -> None:
        points: dict[Group, list[tuple[np.ndarray, float]]] = {None: []}
        for kernel, seconds in table.items():
            if isinstance(kernel, LayerKernel):
                point = (layer_features(kernel), seconds)
                points.setdefault(_group(kernel), []).append(point)
                points[None].append(point)
        if not points[None]:
            raise KeyError("interpolation needs calibrated layer kernels; the table has none")
        self._fits = {
            group: _ridge(pts)
            for group, pts in points.items()
            if group is None or len(pts) >= MIN_GROUP
        }

    def __call__(self, kernel: LayerKernel) -> float:
        coefficients = self._fits.get(_group(kernel), self._fits[None])
        return max(0.0, float(coefficients @ layer_features(kernel)))


def _ridge(points: list[tuple[np.ndarray, float]]) -> np.ndarray:
    x = np.stack([p[0] for p in points])
    y = np.array([p[1] for p in points])
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    z = x / scale
    gram = z.T @ z + _RIDGE * len(y) * np.eye(x.shape[1])
    return np.asarray(np.linalg.lstsq(gram, z.T @ y, rcond=None)[0] / scale)

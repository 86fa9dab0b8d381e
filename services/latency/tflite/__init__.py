"""Write an architecture's ``.tflite`` flatbuffer directly from its network plan.

No TensorFlow: the plan gives every layer, :mod:`.network` turns it into the operators
``TFLiteConverter`` would emit for the Keras model (batch norm folded, activations
fused), a weight source fills in the weights, and :mod:`.writer` packs the flatbuffer.
"""

from __future__ import annotations

from mnas.arch import Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.layers import plan
from services.latency.tflite.network import INPUT_NAME, OUTPUT_NAME, network_graph
from services.latency.tflite.weights import FoldedWeights, RandomWeights, WeightSource
from services.latency.tflite.writer import serialize

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "FoldedWeights",
    "RandomWeights",
    "WeightSource",
    "write_tflite",
]


def write_tflite(
    arch: Architecture,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    resolution: int = DEFAULT_RESOLUTION,
    width: float = DEFAULT_WIDTH,
    weights: WeightSource | None = None,
) -> bytes:
    """The ``.tflite`` flatbuffer of ``arch`` at batch 1 (random weights unless given)."""
    net = plan(arch, width=width, resolution=resolution, num_classes=num_classes)
    return serialize(network_graph(net, weights if weights is not None else RandomWeights()))

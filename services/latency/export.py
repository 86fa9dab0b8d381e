"""Export architectures and Keras models to TFLite flatbuffers, read them back, run them.

Three converter paths produce the same operators (batch norm folded into the convolutions,
activations fused) and the same outputs:

- :func:`to_tflite`: ``TFLiteConverter.from_keras_model``, the reference. It writes the
  model out as a SavedModel and loads it back before converting, which dominates its time.
- :func:`to_tflite_frozen`: traces the inference call, freezes its variables into
  constants and converts that graph directly, skipping the SavedModel round trip.
- :func:`to_tflite_fast`: traces the inference call with the weights already constants
  (Keras' ``stateless_call``), so there is nothing to freeze; the fastest.

The two graph paths carry no SignatureDef (their input is ``image``, their output
``Identity``); run them through the input and output details, as :func:`run_tflite` and
``benchmark_model`` do.

:func:`export_arch`, what the latency service runs, needs no Keras model and no
TensorFlow: it writes the flatbuffer straight from the network plan
(:mod:`services.latency.tflite`), the same operators the converter emits, in
milliseconds. TensorFlow is imported only when a converter path runs, so importing this
module stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from mnas.arch import Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from services.latency.tflite import WeightSource, write_tflite

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

__all__ = [
    "EXPORTERS",
    "export_arch",
    "keras_weights",
    "operator_counts",
    "operator_types",
    "run_tflite",
    "to_tflite",
    "to_tflite_fast",
    "to_tflite_frozen",
]

_logger = logging.getLogger(__name__)

_BUILTIN_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}


def to_tflite(model: keras.Model) -> bytes:
    """Export with ``TFLiteConverter.from_keras_model`` (the reference path; slow)."""
    _require_tensorflow_backend()
    import tensorflow as tf

    saved = io.StringIO()
    with contextlib.redirect_stdout(saved):  # Keras prints where it wrote the SavedModel
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    _logger.debug("from_keras_model: %s", saved.getvalue().strip())
    return bytes(flatbuffer)


def to_tflite_frozen(model: keras.Model) -> bytes:
    """Export by tracing inference, freezing variables to constants, converting the graph."""
    _require_tensorflow_backend()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    call = tf.function(lambda x: model(x, training=False))
    frozen, graph_def = convert_variables_to_constants_v2_as_graph(
        call.get_concrete_function(_input_spec(model))
    )
    inputs = [t for t in frozen.inputs if t.dtype != tf.resource]
    return _convert_graph(graph_def, inputs, frozen.outputs)


def to_tflite_fast(model: keras.Model) -> bytes:
    """Export by tracing inference with the weights as constants and converting the graph."""
    _require_tensorflow_backend()
    import tensorflow as tf

    trainable = [v.numpy() for v in model.trainable_variables]
    non_trainable = [v.numpy() for v in model.non_trainable_variables]

    def infer(x: tf.Tensor) -> tf.Tensor:
        logits, _ = model.stateless_call(
            [tf.constant(v) for v in trainable],
            [tf.constant(v) for v in non_trainable],
            x,
            training=False,
        )
        return logits

    traced = tf.function(infer).get_concrete_function(_input_spec(model))
    return _convert_graph(traced.graph.as_graph_def(), traced.inputs, traced.outputs)


EXPORTERS: dict[str, Callable[[keras.Model], bytes]] = {
    "from_keras_model": to_tflite,
    "frozen_graph": to_tflite_frozen,
    "constant_graph": to_tflite_fast,
}


def export_arch(
    arch: Architecture,
    *,
    num_classes: int = DEFAULT_NUM_CLASSES,
    resolution: int = DEFAULT_RESOLUTION,
    width: float = DEFAULT_WIDTH,
    weights: WeightSource | None = None,
) -> bytes:
    """The ``.tflite`` flatbuffer of ``arch`` at batch 1, as the latency oracles run it.

    Written directly from the network plan (no TensorFlow); the weights are seeded random
    draws unless ``weights`` gives them (see :mod:`services.latency.tflite.weights`).
    """
    return write_tflite(
        arch, num_classes=num_classes, resolution=resolution, width=width, weights=weights
    )


def keras_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Every weight-holding layer's weights by layer name, for
    :class:`services.latency.tflite.FoldedWeights`."""
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def operator_types(model_bytes: bytes) -> list[str]:
    """The builtin (or custom) operator name of every operator, in execution order."""
    model = schema.Model.GetRootAs(model_bytes, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(custom.decode() if custom else _BUILTIN_NAMES.get(builtin, str(builtin)))
    names = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            names.append(codes[subgraph.Operators(o).OpcodeIndex()])
    return names


def operator_counts(model_bytes: bytes) -> dict[str, int]:
    """How many operators of each type the flatbuffer holds."""
    return dict(Counter(operator_types(model_bytes)))


def run_tflite(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run one inference of a single-input, single-output model on one thread."""
    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    (inp,) = interpreter.get_input_details()
    if tuple(inp["shape"]) != x.shape:
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return np.array(interpreter.get_tensor(out["index"]))


def _convert_graph(
    graph_def: tf.compat.v1.GraphDef, inputs: list[tf.Tensor], outputs: list[tf.Tensor]
) -> bytes:
    import tensorflow as tf

    converter = tf.compat.v1.lite.TFLiteConverter(graph_def, inputs, outputs)
    return bytes(converter.convert())


def _input_spec(model: keras.Model) -> tf.TensorSpec:
    """The model's input with a fixed batch (1 where the model leaves it open)."""
    import tensorflow as tf

    (inp,) = model.inputs
    batch, *rest = inp.shape
    return tf.TensorSpec((batch or 1, *rest), inp.dtype, name="image")


def _require_tensorflow_backend() -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"TFLite export needs the Keras 'tensorflow' backend, got {keras.backend.backend()!r}"
        )

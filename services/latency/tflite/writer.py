"""Serialize an operator graph to a ``.tflite`` flatbuffer (schema version 3).

Laid out much as ``TFLiteConverter`` lays out its files: tensor 0 the input, then the
constants, then the activations; buffer 0 empty and shared by every tensor without data
(the converter gives each its own empty buffer: same meaning); one buffer per constant,
its data 16-byte aligned and copied in one slice; operator codes in order of first use
with the builtin and the deprecated code both set; a ``serving_default`` signature with
the names ``from_keras_model`` gives (``image`` in, ``output_0`` out); and the
``min_runtime_version`` metadata the converter computes for these operators.
"""

from __future__ import annotations

from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from services.latency.tflite.graph import Graph, Tensor

__all__ = ["DESCRIPTION", "SIGNATURE_KEY", "SIGNATURE_OUTPUT", "serialize"]

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
DESCRIPTION = "mnas direct export"
SIGNATURE_KEY = "serving_default"
SIGNATURE_OUTPUT = "output_0"  # as from_keras_model names a single output
_ALIGNMENT = 16
_PLACEHOLDER_BUILTIN = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES

# The runtime each operator's version 1 needs (TFLite's runtime_version table).
_MIN_RUNTIME = {
    schema.BuiltinOperator.ADD: (1, 5, 0),
    schema.BuiltinOperator.AVERAGE_POOL_2D: (1, 5, 0),
    schema.BuiltinOperator.CONV_2D: (1, 5, 0),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: (1, 5, 0),
    schema.BuiltinOperator.FULLY_CONNECTED: (1, 5, 0),
    schema.BuiltinOperator.MUL: (1, 5, 0),
    schema.BuiltinOperator.MEAN: (1, 6, 0),
    schema.BuiltinOperator.LOGISTIC: (1, 14, 0),
    schema.BuiltinOperator.HARD_SWISH: (1, 15, 0),
}


def serialize(graph: Graph) -> bytes:
    """The flatbuffer of ``graph`` (one subgraph, every operator at version 1)."""
    tensors = _tensor_order(graph)
    index = {id(t): i for i, t in enumerate(tensors)}
    codes: dict[int, int] = {}
    for op in graph.operators:
        codes.setdefault(op.code, len(codes))

    buffers: list[Any] = [_Buffer(None)]
    tensor_tables = []
    for tensor in tensors:
        buffer = 0
        if tensor.data is not None:
            buffer = len(buffers)
            buffers.append(_Buffer(tensor.data))
        tensor_tables.append(_tensor(tensor, buffer))

    subgraph = schema.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors = tensor_tables
    subgraph.inputs = [index[id(t)] for t in graph.inputs]
    subgraph.outputs = [index[id(t)] for t in graph.outputs]
    subgraph.operators = [_operator(op, codes[op.code], index) for op in graph.operators]

    model = schema.ModelT()
    model.version = SCHEMA_VERSION
    model.description = DESCRIPTION
    model.operatorCodes = [_operator_code(code) for code in codes]
    model.subgraphs = [subgraph]
    runtime = max(_MIN_RUNTIME[code] for code in codes)
    model.metadata = [_metadata("min_runtime_version", len(buffers))]
    buffers.append(_Buffer(np.frombuffer(_runtime_string(runtime), np.uint8)))
    model.buffers = buffers
    model.signatureDefs = [_signature(graph, index)]

    data_bytes = sum(t.data.nbytes for t in tensors if t.data is not None)
    builder = flatbuffers.Builder(data_bytes + _ALIGNMENT * len(buffers) + 64 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())  # Output() is a bytearray slice


def _tensor_order(graph: Graph) -> list[Tensor]:
    """Inputs, then constants, then activations, each in order of first use."""
    seen: set[int] = set()
    constants: list[Tensor] = []
    activations: list[Tensor] = []
    for tensor in graph.inputs:
        seen.add(id(tensor))
    for op in graph.operators:
        for tensor in (*op.inputs, *op.outputs):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                (constants if tensor.is_constant else activations).append(tensor)
    return [*graph.inputs, *constants, *activations]


def _tensor(tensor: Tensor, buffer: int) -> Any:
    table = schema.TensorT()
    table.name = tensor.name
    table.shape = list(tensor.shape)
    table.type = tensor.type
    table.buffer = buffer
    table.hasRank = True
    return table


def _operator(op: Any, opcode_index: int, index: dict[int, int]) -> Any:
    table = schema.OperatorT()
    table.opcodeIndex = opcode_index
    table.inputs = [index[id(t)] for t in op.inputs]
    table.outputs = [index[id(t)] for t in op.outputs]
    table.builtinOptionsType = op.options_type
    table.builtinOptions = op.options
    return table


def _operator_code(code: int) -> Any:
    table = schema.OperatorCodeT()
    table.builtinCode = code
    table.deprecatedBuiltinCode = min(code, _PLACEHOLDER_BUILTIN)
    table.version = 1
    return table


def _metadata(name: str, buffer: int) -> Any:
    table = schema.MetadataT()
    table.name = name
    table.buffer = buffer
    return table


def _runtime_string(version: tuple[int, int, int]) -> bytes:
    """The version as the converter stores it: NUL-padded to 16 bytes."""
    return ".".join(map(str, version)).encode().ljust(16, b"\0")


def _signature(graph: Graph, index: dict[int, int]) -> Any:
    def tensor_map(name: str, tensor: Tensor) -> Any:
        table = schema.TensorMapT()
        table.name = name
        table.tensorIndex = index[id(tensor)]
        return table

    (image,) = graph.inputs
    (logits,) = graph.outputs
    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(image.name, image)]
    signature.outputs = [tensor_map(SIGNATURE_OUTPUT, logits)]
    return signature


class _Buffer:
    """A ``Buffer`` table whose data vector starts on a 16-byte boundary.

    Stands in for ``schema.BufferT`` in the object API: its data is copied into the
    builder in one slice instead of byte by byte.
    """

    def __init__(self, data: np.ndarray | None) -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:
        vector = None
        if self.data is not None:
            raw = self.data.reshape(-1).view(np.uint8)
            builder.StartVector(1, raw.size, _ALIGNMENT)
            builder.head = builder.head - raw.size
            builder.Bytes[builder.head : builder.head + raw.size] = raw.data
            vector = builder.EndVector()
        schema.BufferStart(builder)
        if vector is not None:
            schema.BufferAddData(builder, vector)
        return int(schema.BufferEnd(builder))

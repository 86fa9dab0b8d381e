"""TFLite export: every path gives the same operators and outputs, and LiteRT runs them.

Comparing TensorFlow's three converters with each other (``*_export_paths_agree``) tests
TensorFlow more than mnas, at seconds per model: those run with the slow tests. The
default run keeps the checks of our own writer against the converter
(tests/latency/test_direct_export.py) and LiteRT running what we export.
"""

from __future__ import annotations

from collections import Counter

import keras
import numpy as np
import pytest

from mnas import references
from mnas.arch import Activation, Architecture, Op
from mnas.layers import NetworkPlan, Shortcut, plan
from services.latency.export import (
    EXPORTERS,
    export_arch,
    operator_counts,
    operator_types,
    run_tflite,
    to_tflite,
    to_tflite_fast,
)
from services.latency.keras_builder import build_keras
from tests.latency.archs import ALL_FEATURES, coverage, random_architectures

REFERENCES = references.names()
RANDOM = random_architectures(6, seed=3)
RANDOM_RESOLUTION = 50


def expected_operators(net: NetworkPlan) -> dict[str, int]:
    """What a fully folded export holds: batch norm inside the convolutions, activations
    fused (hard-swish: its own operator after each activated convolution), dropout gone;
    SE is mean, two convolutions, logistic and multiply."""
    ops: Counter[str] = Counter({"CONV_2D": 2, "MEAN": 1, "FULLY_CONNECTED": 1})  # stem, head
    activated = 2  # stem, head
    for layer in net.layers:
        if layer.op is Op.CONV:
            ops["CONV_2D"] += 1
            activated += 1
        else:
            ops["CONV_2D"] += 2 if layer.expands else 1
            ops["DEPTHWISE_CONV_2D"] += 1
            activated += 2 if layer.expands else 1
        if layer.se_channels:
            ops.update({"MEAN": 1, "CONV_2D": 2, "LOGISTIC": 1, "MUL": 1})
        ops["AVERAGE_POOL_2D"] += layer.shortcut_pools
        ops["CONV_2D"] += layer.shortcut_projects
        ops["ADD"] += layer.shortcut is not Shortcut.NONE
    if net.activation is Activation.HARD_SWISH:
        ops["HARD_SWISH"] += activated
    return {op: n for op, n in ops.items() if n}


def _randomize_batch_norm(model: keras.Model, seed: int) -> None:
    """Non-trivial batch-norm statistics, so that folding them is visible in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.normal(0, 0.1, n),
                    rng.normal(0, 0.1, n),
                    rng.uniform(0.5, 1.5, n),
                ]
            )


def _input(resolution: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((1, resolution, resolution, 3))
    return x.astype(np.float32)


def test_random_architectures_cover_every_layer_kind() -> None:
    seen = coverage([plan(a, resolution=RANDOM_RESOLUTION, num_classes=10) for a in RANDOM])
    assert seen >= ALL_FEATURES, sorted(ALL_FEATURES - seen)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_exports_and_runs_in_litert(name: str) -> None:
    arch = references.get(name)
    flatbuffer = export_arch(arch, num_classes=1000, resolution=224, width=1.0)
    assert operator_counts(flatbuffer) == expected_operators(plan(arch))
    logits = run_tflite(flatbuffer, _input(224))
    assert logits.shape == (1, 1000)
    assert np.isfinite(logits).all()


def _assert_paths_agree(arch: Architecture, resolution: int, classes: int, seed: int) -> None:
    keras.utils.set_random_seed(seed)  # the kernels too, so that a failure reproduces
    model = build_keras(arch, num_classes=classes, resolution=resolution)
    _randomize_batch_norm(model, seed)
    x = _input(resolution, seed)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    flatbuffers = {name: export(model) for name, export in EXPORTERS.items()}
    reference = flatbuffers["from_keras_model"]
    assert operator_counts(reference) == expected_operators(plan(arch, resolution=resolution))
    reference_logits = run_tflite(reference, x)
    # Keras (TensorFlow kernels) and LiteRT (XNNPACK) sum in different orders: agree to
    # float32 rounding of the largest logit. Export paths agree with each other exactly.
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(reference_logits, expected, rtol=0, atol=1e-4 * scale)
    for name, flatbuffer in flatbuffers.items():
        assert operator_types(flatbuffer) == operator_types(reference), name
        got = run_tflite(flatbuffer, x)
        np.testing.assert_allclose(got, reference_logits, rtol=0, atol=1e-4, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_export_paths_agree(name: str) -> None:
    _assert_paths_agree(references.get(name), 224, 1000, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(RANDOM)))
def test_random_export_paths_agree(index: int) -> None:
    _assert_paths_agree(RANDOM[index], RANDOM_RESOLUTION, 10, seed=index)


def test_open_batch_exports_at_batch_one() -> None:
    model = build_keras(RANDOM[0], num_classes=10, resolution=32, batch_size=None)
    x = _input(32)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(run_tflite(to_tflite_fast(model), x), expected, atol=1e-4)


def test_run_tflite_resizes_to_the_input_batch() -> None:
    model = build_keras(RANDOM[1], num_classes=10, resolution=32)
    x = np.concatenate([_input(32, 0), _input(32, 1)])
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(run_tflite(to_tflite(model), x), expected, atol=1e-4)

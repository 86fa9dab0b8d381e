"""The direct flatbuffer writer: the converter's operators, the same outputs, a sound file."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from mnas import references
from mnas.arch import Activation, Architecture
from mnas.layers import NetworkPlan, plan
from services.latency.export import (
    export_arch,
    keras_weights,
    operator_counts,
    operator_types,
    run_tflite,
    to_tflite,
    to_tflite_fast,
)
from services.latency.keras_builder import build_keras
from services.latency.tflite import FoldedWeights, RandomWeights, write_tflite
from tests.latency.archs import ALL_FEATURES, coverage, random_architectures
from tests.latency.test_tflite_export import expected_operators

REFERENCES = references.names()
RANDOM = random_architectures(20, seed=12)
# Odd and even sizes; an index picks one per random architecture.
RESOLUTIONS = (33, 40, 47, 64, 29, 50, 37)
CLASSES = 10


def _resolution(index: int) -> int:
    return RESOLUTIONS[index % len(RESOLUTIONS)]


def _randomize(model: keras.Model, seed: int) -> None:
    """Non-trivial batch norm statistics and biases, so that folding them shows."""
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
        elif len(layer.weights) == 2:  # a convolution or dense layer with a bias
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])


def _input(resolution: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((1, resolution, resolution, 3))
    return x.astype(np.float32)


def _smallest_size(net: NetworkPlan) -> int:
    return min(layer.out_size for layer in net.layers)


def _assert_matches_converter(
    arch: Architecture, resolution: int, classes: int, seed: int, convert=to_tflite_fast
) -> None:
    """Same weights through the converter and the direct writer: same operators, outputs."""
    keras.utils.set_random_seed(seed)  # the kernels too, so that a failure reproduces
    model = build_keras(arch, num_classes=classes, resolution=resolution)
    _randomize(model, seed)
    converted = convert(model)
    direct = export_arch(
        arch,
        num_classes=classes,
        resolution=resolution,
        weights=FoldedWeights(keras_weights(model)),
    )
    net = plan(arch, resolution=resolution, num_classes=classes)
    assert operator_counts(direct) == expected_operators(net)
    if _smallest_size(net) > 1:
        # At 1x1 the converter rewrites some adds and drops SE means; not otherwise.
        assert operator_types(direct) == operator_types(converted)
    x = _input(resolution, seed)
    expected = run_tflite(converted, x)
    # Both are float32 with sums in another order (folded in float64 here, by TensorFlow
    # there): through 60-odd random layers at 224x224 their logits, in the hundreds, differ
    # by up to 3e-5 of the largest, as much as either differs from Keras. A wrong weight,
    # pad or operator moves them by a large part of it.
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(run_tflite(direct, x), expected, rtol=0, atol=1e-4 * scale)


def test_random_architectures_cover_every_layer_kind() -> None:
    plans = [plan(a, resolution=_resolution(i)) for i, a in enumerate(RANDOM)]
    assert coverage(plans) >= ALL_FEATURES, sorted(ALL_FEATURES - coverage(plans))
    assert all(_smallest_size(net) > 1 for net in plans), "every order check must run"


@pytest.mark.parametrize("index", range(len(RANDOM)))
def test_random_architecture_matches_the_converter(index: int) -> None:
    _assert_matches_converter(RANDOM[index], _resolution(index), CLASSES, seed=index)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_matches_the_converter(name: str) -> None:
    _assert_matches_converter(references.get(name), 64, CLASSES, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_matches_from_keras_model_at_224(name: str) -> None:
    _assert_matches_converter(references.get(name), 224, 1000, seed=2, convert=to_tflite)


@pytest.mark.parametrize("activation", list(Activation), ids=lambda a: a.value)
def test_every_activation_matches_the_converter(activation: Activation) -> None:
    arch = dataclasses.replace(references.get("mnasnet-a1"), activation=activation)
    _assert_matches_converter(arch, 64, CLASSES, seed=4)


def test_spatial_size_one_still_computes_the_same() -> None:
    # Down to 1x1 before the head: the converter's rewrites differ, the outputs agree.
    arch = RANDOM[0]
    assert _smallest_size(plan(arch, resolution=2)) == 1
    _assert_matches_converter(arch, 2, CLASSES, seed=5)


@pytest.mark.parametrize(("resolution", "classes", "width"), [(224, 1000, 1.0), (57, 7, 0.5)])
def test_input_and_output_as_the_oracles_run_them(
    resolution: int, classes: int, width: float
) -> None:
    arch = references.get("mnasnet-a1")
    flatbuffer = export_arch(arch, num_classes=classes, resolution=resolution, width=width)
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["name"] == "image" and out["name"] == "logits"
    assert tuple(inp["shape"]) == (1, resolution, resolution, 3)
    assert tuple(out["shape"]) == (1, classes)
    assert inp["dtype"] == out["dtype"] == np.float32
    runner = interpreter.get_signature_runner("serving_default")
    logits = runner(image=_input(resolution))["output_0"]
    assert logits.shape == (1, classes) and np.isfinite(logits).all()
    assert np.abs(logits).max() > 0
    net = plan(arch, resolution=resolution, num_classes=classes, width=width)
    assert operator_counts(flatbuffer) == expected_operators(net)


def test_file_header_buffers_and_metadata() -> None:
    flatbuffer = export_arch(RANDOM[1], num_classes=CLASSES, resolution=40)
    assert flatbuffer[4:8] == b"TFL3"
    model = schema.Model.GetRootAs(flatbuffer, 0)
    assert model.Version() == 3
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    assert all(c.BuiltinCode() == c.DeprecatedBuiltinCode() and c.Version() == 1 for c in codes)
    assert model.Buffers(0).DataLength() == 0
    constants = 0
    for i in range(1, model.BuffersLength()):
        table = model.Buffers(i)._tab
        field = table.Offset(4)  # Buffer.data
        if field:
            constants += 1
            assert table.Vector(field) % 16 == 0, f"buffer {i} is not 16-byte aligned"
    assert constants > 10
    metadata = {
        model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())
    }
    runtime = model.Buffers(metadata[b"min_runtime_version"]).DataAsNumpy().tobytes()
    assert runtime == b"1.14.0".ljust(16, b"\0")  # LOGISTIC needs 1.14


def test_random_weights_are_a_function_of_the_seed() -> None:
    arch = RANDOM[2]
    first = write_tflite(arch, num_classes=CLASSES, resolution=33)
    assert write_tflite(arch, num_classes=CLASSES, resolution=33) == first
    other = write_tflite(arch, num_classes=CLASSES, resolution=33, weights=RandomWeights(seed=1))
    assert other != first and len(other) == len(first)
    assert operator_types(other) == operator_types(first)


def test_folded_weights_name_what_is_missing_or_misshapen() -> None:
    arch = RANDOM[3]
    weights = keras_weights(build_keras(arch, num_classes=CLASSES, resolution=33))
    with pytest.raises(ValueError, match=r"'classifier'.*shape \(\d+, 10\), expected \(\d+, 11\)"):
        write_tflite(arch, num_classes=11, resolution=33, weights=FoldedWeights(weights))
    del weights["head.bn"]
    with pytest.raises(KeyError, match=r"'head\.bn'"):
        write_tflite(arch, num_classes=CLASSES, resolution=33, weights=FoldedWeights(weights))


def test_export_arch_does_not_load_tensorflow() -> None:
    code = (
        "import sys\n"
        "from mnas import references\n"
        "from services.latency.export import export_arch, run_tflite\n"
        "import numpy as np\n"
        "flatbuffer = export_arch(references.get('mnasnet-small'), resolution=64)\n"
        "run_tflite(flatbuffer, np.zeros((1, 64, 64, 3), np.float32))\n"
        "loaded = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_no_memory_growth_over_200_exports() -> None:
    arch = references.get("mnasnet-a1")
    for _ in range(5):
        export_arch(arch)
    before = _rss_bytes()
    for _ in range(200):
        export_arch(arch)
    grown = _rss_bytes() - before
    # One export allocates about 30 MiB and returns it all; a leak of even one
    # flatbuffer per export would be 3 GB.
    assert grown < 64 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")

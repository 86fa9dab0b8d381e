"""Time TFLite export paths on MnasNet-A1 at 224x224 and print the figures as JSON.

Run as ``python benchmarks/export.py [--repeats N]``. Each repeat builds a fresh Keras model
and exports it with every path, after one warm-up round; the last line of stdout is one
JSON object with the median seconds per path, the speed-up over ``from_keras_model``, the
flatbuffer sizes and operator counts. Progress goes to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from mnas import references
from services.latency.export import EXPORTERS, operator_counts, run_tflite
from services.latency.keras_builder import build_keras

_logger = logging.getLogger("benchmarks.export")

ARCH = "mnasnet-a1"
RESOLUTION = 224
BASELINE = "from_keras_model"


def concrete_function_via_saved_model(model: keras.Model) -> bytes:
    """Tried and not kept: a frozen concrete function handed to ``from_concrete_functions``
    with the model as its trackable object; the converter still round-trips a SavedModel."""
    spec = tf.TensorSpec((1, RESOLUTION, RESOLUTION, 3), tf.float32, name="image")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(traced)
    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert())


PATHS: dict[str, Callable[[keras.Model], bytes]] = {
    **EXPORTERS,
    "concrete_function_saved_model": concrete_function_via_saved_model,
}


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    arch = references.get(ARCH)

    build_times: list[float] = []
    export_times: dict[str, list[float]] = {name: [] for name in PATHS}
    flatbuffers: dict[str, bytes] = {}
    model: keras.Model | None = None
    for round_ in range(args.repeats + 1):
        seconds, built = _timed(lambda: build_keras(arch, resolution=RESOLUTION))
        assert isinstance(built, keras.Model)
        model = built
        if round_:
            build_times.append(seconds)
        for name, export in PATHS.items():
            seconds, flatbuffer = _timed(lambda: export(built))  # noqa: B023
            assert isinstance(flatbuffer, bytes)
            flatbuffers[name] = flatbuffer
            if round_:
                export_times[name].append(seconds)
            _logger.info("round %d %-30s %.2f s", round_, name, seconds)

    assert model is not None
    x = np.random.default_rng(0).standard_normal((1, RESOLUTION, RESOLUTION, 3))
    x = x.astype(np.float32)
    outputs = {name: run_tflite(flatbuffer, x) for name, flatbuffer in flatbuffers.items()}
    baseline_seconds = statistics.median(export_times[BASELINE])
    baseline_ops = operator_counts(flatbuffers[BASELINE])
    paths = {}
    for name, flatbuffer in flatbuffers.items():
        median = statistics.median(export_times[name])
        ops = operator_counts(flatbuffer)
        paths[name] = {
            "export_seconds": round(median, 3),
            "speedup": round(baseline_seconds / median, 2),
            "tflite_bytes": len(flatbuffer),
            "operators": sum(ops.values()),
            "operator_counts": dict(sorted(ops.items())),
            "same_operators_as_baseline": ops == baseline_ops,
            "max_abs_diff_vs_baseline": float(np.abs(outputs[name] - outputs[BASELINE]).max()),
        }
    report = {
        "arch": ARCH,
        "resolution": RESOLUTION,
        "repeats": args.repeats,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
        "build_seconds": round(statistics.median(build_times), 3),
        "baseline": BASELINE,
        "paths": paths,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Time ``.tflite`` export paths on MnasNet-A1 and MobileNetV2 at 224x224; print JSON.

Run as ``python benchmarks/export.py [--repeats N]``. Per architecture, after one warm-up
round: every converter path (each repeat builds a fresh Keras model and exports it) and
the direct writer behind ``export_arch``; then whether the direct file holds the
baseline's operators and gives its outputs for the same weights, and the host latency of
the two files (LiteRT, one thread, runs interleaved). Then the resident memory before
and after 200 more direct exports. Progress goes to stderr; every stdout line is JSON,
the last one ``{"mnasnet-a1": {"fast_s": ..., "baseline_s": ..., "ratio": ...}, ...}``
with the median seconds of ``export_arch`` and of ``from_keras_model``.
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
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from mnas import references
from mnas.arch import Architecture
from services.latency.export import (
    EXPORTERS,
    export_arch,
    keras_weights,
    operator_counts,
    operator_types,
    run_tflite,
)
from services.latency.keras_builder import build_keras
from services.latency.tflite import FoldedWeights

_logger = logging.getLogger("benchmarks.export")

ARCHS = ("mnasnet-a1", "mobilenetv2")
RESOLUTION = 224
BASELINE = "from_keras_model"
DIRECT = "direct"
MIN_DIRECT_RUNS = 20  # the direct path is cheap: time it more often for a steadier median
MEMORY_EXPORTS = 200
LATENCY_RUNS = 40


def concrete_function_via_saved_model(model: keras.Model) -> bytes:
    """Tried and not kept: a frozen concrete function handed to ``from_concrete_functions``
    with the model as its trackable object; the converter still round-trips a SavedModel."""
    spec = tf.TensorSpec((1, RESOLUTION, RESOLUTION, 3), tf.float32, name="image")
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(traced)
    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert())


CONVERTER_PATHS: dict[str, Callable[[keras.Model], bytes]] = {
    **EXPORTERS,
    "concrete_function_saved_model": concrete_function_via_saved_model,
}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _export_direct(arch: Architecture) -> bytes:
    return export_arch(arch, num_classes=1000, resolution=RESOLUTION, width=1.0)


def _interleaved_latency(files: dict[str, bytes], runs: int) -> dict[str, float]:
    """Median seconds per inference of each file, one thread, runs taken in turn."""
    x = np.random.default_rng(0).standard_normal((1, RESOLUTION, RESOLUTION, 3))
    interpreters = {}
    for name, flatbuffer in files.items():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        interpreter.set_tensor(inp["index"], x.astype(np.float32))
        for _ in range(3):
            interpreter.invoke()
        interpreters[name] = interpreter
    samples: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(runs):
        for name, interpreter in interpreters.items():
            seconds, _ = _timed(interpreter.invoke)
            samples[name].append(seconds)
    return {name: statistics.median(times) for name, times in samples.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def bench_arch(name: str, repeats: int) -> dict[str, Any]:
    """Export timings, operator and output equivalence, host latency for one architecture."""
    arch = references.get(name)
    times: dict[str, list[float]] = {path: [] for path in (*CONVERTER_PATHS, DIRECT)}
    build_times: list[float] = []
    flatbuffers: dict[str, bytes] = {}
    model: keras.Model | None = None
    for round_ in range(repeats + 1):
        seconds, model = _timed(lambda: build_keras(arch, resolution=RESOLUTION))
        if round_:
            build_times.append(seconds)
        for path, export in CONVERTER_PATHS.items():
            seconds, flatbuffers[path] = _timed(lambda: export(model))  # noqa: B023
            if round_:
                times[path].append(seconds)
            _logger.info("%s round %d %-30s %.3f s", name, round_, path, seconds)
        for _ in range(max(1, MIN_DIRECT_RUNS // repeats) if round_ else 1):
            seconds, flatbuffers[DIRECT] = _timed(lambda: _export_direct(arch))
            if round_:
                times[DIRECT].append(seconds)
        _logger.info("%s round %d %-30s %.3f s", name, round_, DIRECT, seconds)

    assert model is not None
    baseline = flatbuffers[BASELINE]
    same_weights = export_arch(
        arch, resolution=RESOLUTION, weights=FoldedWeights(keras_weights(model))
    )
    x = np.random.default_rng(1).standard_normal((1, RESOLUTION, RESOLUTION, 3))
    x = x.astype(np.float32)
    reference = run_tflite(baseline, x)
    got = run_tflite(same_weights, x)
    _logger.info("%s timing host latency, %d interleaved runs", name, LATENCY_RUNS)
    latency = _interleaved_latency({BASELINE: baseline, DIRECT: flatbuffers[DIRECT]}, LATENCY_RUNS)

    medians = {path: statistics.median(samples) for path, samples in times.items()}
    return {
        "arch": name,
        "resolution": RESOLUTION,
        "repeats": repeats,
        "build_keras_s": round(statistics.median(build_times), 3),
        "export_s": {path: round(seconds, 4) for path, seconds in medians.items()},
        "speedup_vs_baseline": {
            path: round(medians[BASELINE] / seconds, 1) for path, seconds in medians.items()
        },
        "tflite_bytes": {path: len(fb) for path, fb in flatbuffers.items()},
        "operators": sum(operator_counts(flatbuffers[DIRECT]).values()),
        "same_operator_order_as_baseline": {
            path: operator_types(fb) == operator_types(baseline) for path, fb in flatbuffers.items()
        },
        "same_weights_max_rel_diff": float(
            np.abs(got - reference).max() / max(1.0, float(np.abs(reference).max()))
        ),
        "host_latency_ms": {path: round(s * 1e3, 3) for path, s in latency.items()},
        "host_latency_ratio": round(latency[DIRECT] / latency[BASELINE], 3),
        "_medians": medians,
    }


def bench_memory(name: str, exports: int) -> dict[str, Any]:
    """Resident memory around ``exports`` more direct exports (after a warm-up)."""
    arch = references.get(name)
    for _ in range(5):
        _export_direct(arch)
    before = _rss_bytes()
    for i in range(exports):
        _export_direct(arch)
        if (i + 1) % 50 == 0:
            _logger.info("memory: %d exports, RSS %.1f MiB", i + 1, _rss_bytes() / 2**20)
    after = _rss_bytes()
    return {
        "arch": name,
        "exports": exports,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "rss_growth_mib": round((after - before) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    summary = {}
    for name in ARCHS:
        report = bench_arch(name, args.repeats)
        medians = report.pop("_medians")
        report.update(tensorflow=tf.__version__, keras=keras.__version__, cpus=os.cpu_count())
        print(json.dumps(report), flush=True)
        summary[name] = {
            "fast_s": round(medians[DIRECT], 4),
            "baseline_s": round(medians[BASELINE], 3),
            "ratio": round(medians[BASELINE] / medians[DIRECT], 1),
        }
    print(json.dumps(bench_memory(ARCHS[0], MEMORY_EXPORTS)), flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

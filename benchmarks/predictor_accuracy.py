"""How well the calibrated latency predictor ranks and prices unseen architectures.

Calibrates a predictor on the host CPU (``HostOracle``, robust statistic of the default
``MeasureSettings``): the kernels of the default search space at ``--width`` and
``--resolution`` (``--no-space``: only those of the calibration architectures) and the
correction on ``--calibration`` random architectures. Then measures ``--test`` other
random architectures of the space and compares. Prints progress and, last, one JSON
object: ``within_10pct`` (share of predictions within 10% of the measurement),
``spearman`` (rank correlation), ``predict_ms`` (mean time of a first prediction of an
architecture), with the same figures for the bare kernel sum beside them. Calibration and
the test measurements both make ``--passes`` passes and keep each network's fastest
robust figure (a burst of load from other work on the machine spoils no figure).

    python -m benchmarks.predictor_accuracy [--width 1.0] [--resolution 224] [--test 100]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import logging
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from mnas.arch import Architecture
from mnas.space import SearchSpace
from services.latency.oracle import HostOracle
from services.latency.predictor import KernelMeasurer, LatencyPredictor, calibrate

_logger = logging.getLogger(__name__)


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="mergesort")
    result = np.empty(len(data))
    i = 0
    while i < len(data):
        j = i
        while j + 1 < len(data) and data[order[j + 1]] == data[order[i]]:
            j += 1
        result[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def within(predicted: Sequence[float], measured: Sequence[float], tolerance: float) -> float:
    hits = sum(abs(p - m) <= tolerance * m for p, m in zip(predicted, measured, strict=True))
    return hits / len(measured)


def distinct_architectures(
    space: SearchSpace, count: int, rng: random.Random
) -> list[Architecture]:
    seen: set[str] = set()
    archs: list[Architecture] = []
    while len(archs) < count:
        arch = space.sample(rng)
        if arch.id not in seen:
            seen.add(arch.id)
            archs.append(arch)
    return archs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=40, help="architectures to fit on")
    parser.add_argument("--test", type=int, default=100, help="architectures to compare on")
    parser.add_argument("--no-space", action="store_true", help="no space-wide kernel table")
    parser.add_argument("--passes", type=int, default=2, help="measurement passes, fastest kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the predictor file here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    space = SearchSpace(width=args.width, resolution=args.resolution)
    sizes = {"resolution": args.resolution, "width": args.width, "num_classes": space.num_classes}
    archs = distinct_architectures(space, args.calibration + args.test, random.Random(args.seed))
    train, test = archs[: args.calibration], archs[args.calibration :]
    oracle = HostOracle()

    started = time.perf_counter()
    table_space = None if args.no_space else space
    predictor = calibrate(oracle, train, space=table_space, passes=args.passes, **sizes)
    calibrate_seconds = time.perf_counter() - started
    if args.save:
        predictor.save(args.save)
    table = predictor.kernels

    measurer = KernelMeasurer(oracle)
    fresh = LatencyPredictor.from_json(predictor.to_json(), device_class=oracle.device_class)
    predicted, predict_seconds = [], []
    for arch in test:
        tick = time.perf_counter()
        predicted.append(fresh.predict(arch, **sizes))  # a first prediction: nothing cached
        predict_seconds.append(time.perf_counter() - tick)
    nets = [predictor.network(arch, **sizes) for arch in test]
    kernel_sums = [predictor.kernel_sum(net) for net in nets]
    unseen = sum(k not in table for net in nets for k in net.kernels)
    measured = [math.inf] * len(test)
    for done in range(args.passes):  # one pass over all, then the next: the fastest counts
        for i, arch in enumerate(test):
            seconds = measurer.seconds(arch, args.resolution, args.width, space.num_classes)
            measured[i] = min(measured[i], seconds)
            _logger.info("pass %d: %d %s %.3f ms", done + 1, i, arch.id, seconds * 1e3)
    for i, arch in enumerate(test):
        print(
            f"{i} {arch.id} measured {measured[i] * 1e3:.3f} ms predicted "
            f"{predicted[i] * 1e3:.3f} ms ({(predicted[i] / measured[i] - 1) * 100:+.1f}%) "
            f"kernel sum {kernel_sums[i] * 1e3:.3f} ms"
        )
    out = {
        "within_10pct": round(within(predicted, measured, 0.10), 4),
        "spearman": round(spearman(predicted, measured), 4),
        "predict_ms": round(statistics.fmean(predict_seconds) * 1e3, 4),
        "within_5pct": round(within(predicted, measured, 0.05), 4),
        "mean_abs_error_pct": round(
            statistics.fmean(abs(p / m - 1) for p, m in zip(predicted, measured, strict=True))
            * 100,
            3,
        ),
        "kernel_sum_within_10pct": round(within(kernel_sums, measured, 0.10), 4),
        "kernel_sum_spearman": round(spearman(kernel_sums, measured), 4),
        "measured_ms": {
            "min": round(min(measured) * 1e3, 3),
            "median": round(statistics.median(measured) * 1e3, 3),
            "max": round(max(measured) * 1e3, 3),
        },
        "kernels": len(table),
        "unseen_kernel_share": round(
            unseen / sum(len(predictor.network(a, **sizes).kernels) for a in test), 4
        ),
        "correction": {
            "intercept_seconds": predictor.correction.intercept_seconds,
            **predictor.correction.coefficients,
        },
        "calibration_archs": len(train),
        "test_archs": len(test),
        "space_table": not args.no_space,
        "passes": args.passes,
        "calibrate_seconds": round(calibrate_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        **sizes,
        "build": predictor.build,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

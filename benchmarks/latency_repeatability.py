"""How repeatable the host oracle's reported latency is over repeated measurements.

Measures each architecture ``--calls`` times through ``LatencyService.measure`` (export
and ``HostOracle.measure`` in the oracle's slot, as the server does), each call on a fresh
service so the cache never answers. Every round measures each architecture three ways,
interleaved so that all see the same load on the machine: the old way (20 runs, the
median), the robust figure of the default ``MeasureSettings`` (50 runs), and the same
with a reference model timed after every run (``HostOracle(reference=...)``). Prints one
line per call and, last, one JSON object: ``cv`` (coefficient of variation, sample
standard deviation over mean, of the reported figure per architecture, with the
reference), ``cv_robust`` (without it) and ``cv_before`` (the old way).

    python -m benchmarks.latency_repeatability [--calls 10] [--arch mnasnet-a1 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from collections.abc import Callable

from mnas import references
from mnas.build import BuildParams
from services.latency.export import export_arch
from services.latency.oracle import HostOracle, LatencyResult, MeasureSettings
from services.latency.service import LatencyService

_logger = logging.getLogger(__name__)

BEFORE = MeasureSettings(warmup_runs=5, runs=20)


def _median(result: LatencyResult) -> float:
    return result.median


def _robust(result: LatencyResult) -> float:
    return result.robust


REFERENCE = "mnasnet-small"  # the reference model of the normalized way, at 224x224


def reference_model() -> bytes:
    return export_arch(references.get(REFERENCE), num_classes=1000, resolution=224, width=1.0)


def cv(values: list[float]) -> float:
    """Sample standard deviation over mean."""
    return statistics.stdev(values) / statistics.fmean(values)


def cvs(by_arch: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(cv(values), 5) for name, values in by_arch.items()}


def summary(result: LatencyResult) -> str:
    ms = sorted(s * 1e3 for s in result.samples_seconds)
    return (
        f"n={len(ms)} min={ms[0]:.3f} median={result.median * 1e3:.3f} "
        f"p90={result.p90 * 1e3:.3f} max={ms[-1]:.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--arch", nargs="+", default=["mnasnet-a1", "mobilenetv2"])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--cpu", type=int, default=None, help="pin measurements to this CPU")
    parser.add_argument("--samples", action="store_true", help="print every sample (ms)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    plain = HostOracle(cpu=args.cpu)
    normalized = HostOracle(cpu=args.cpu, reference=reference_model())
    ways: dict[str, tuple[HostOracle, MeasureSettings, Callable[[LatencyResult], float]]] = {
        "before": (plain, BEFORE, _median),
        "robust": (plain, MeasureSettings(), _robust),
        "reference": (normalized, MeasureSettings(), _robust),
    }
    build = BuildParams(resolution=args.resolution)
    figures: dict[str, dict[str, list[float]]] = {
        way: {name: [] for name in args.arch} for way in ways
    }
    seconds: dict[str, float] = dict.fromkeys(ways, 0.0)
    for call in range(args.calls):
        for name in args.arch:
            arch = references.get(name)
            for way, (oracle, settings, statistic) in ways.items():
                service = LatencyService([oracle])  # fresh: no cache hit
                measurement = service.measure(arch, build=build, settings=settings)
                result = measurement.result
                seconds[way] += measurement.measure_seconds
                figure = statistic(result)
                figures[way][name].append(figure)
                print(f"{call} {name} {way}: {figure * 1e3:.3f} ms ({summary(result)})")
                if args.samples:
                    samples = " ".join(f"{s * 1e3:.3f}" for s in result.samples_seconds)
                    print(f"  samples ms: {samples}")
    calls = args.calls * len(args.arch)
    out = {
        "cv": cvs(figures["reference"]),
        "cv_robust": cvs(figures["robust"]),
        "cv_before": cvs(figures["before"]),
        "reported_ms": {
            way: {name: round(statistics.fmean(v) * 1e3, 4) for name, v in by_arch.items()}
            for way, by_arch in figures.items()
        },
        "measure_seconds_per_call": {way: round(t / calls, 3) for way, t in seconds.items()},
        "cv_is": f"robust figure with an interleaved reference ({REFERENCE} at 224), 50 runs",
        "cv_robust_is": "robust figure (fastest-tenth mean) of 50 runs, no reference",
        "cv_before_is": "median of 20 runs",
        "calls": args.calls,
        "resolution": args.resolution,
        "cpu": args.cpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

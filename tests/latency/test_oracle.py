"""Latency oracles: statistics, settings, and every oracle through the same conformance checks."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import pytest

from mnas.arch import decode
from services.latency.export import export_arch
from services.latency.oracle import (
    HOST_CPU,
    HostOracle,
    LatencyOracle,
    LatencyResult,
    MeasureSettings,
    fastest_mean,
    host_cpu_model,
    nearest_rank,
)

TINY = "stem:8 r1_k3_s11_e1_i8_o8 r2_k3_s22_e3_i8_o16_se0.25 head:32"

# Every oracle implementation runs through the conformance checks below.
ORACLES: list[object] = [pytest.param(HostOracle, id="host")]


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return export_arch(decode(TINY), num_classes=10, resolution=32, width=1.0)


@pytest.fixture(params=ORACLES)
def oracle(request: pytest.FixtureRequest) -> LatencyOracle:
    factory: Callable[[], LatencyOracle] = request.param
    return factory()


# --- statistics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "median", "minimum", "p90", "mean"),
    [
        ((1.0,), 1.0, 1.0, 1.0, 1.0),
        ((1.0, 2.0), 1.5, 1.0, 2.0, 1.5),
        ((3.0, 1.0, 2.0), 2.0, 1.0, 3.0, 2.0),
        ((5.0, 5.0, 5.0, 5.0), 5.0, 5.0, 5.0, 5.0),
        (tuple(float(i) for i in range(10, 0, -1)), 5.5, 1.0, 9.0, 5.5),
        (tuple(float(i) for i in range(1, 21)), 10.5, 1.0, 18.0, 10.5),
        (tuple(float(i) for i in range(1, 12)), 6.0, 1.0, 10.0, 6.0),
        ((0.002, 0.001, 0.010, 0.003), 0.0025, 0.001, 0.010, 0.004),
    ],
)
def test_statistics(
    samples: tuple[float, ...], median: float, minimum: float, p90: float, mean: float
) -> None:
    result = LatencyResult(samples_seconds=samples, device="d")
    assert result.median == pytest.approx(median)
    assert result.min == minimum
    assert result.p90 == p90
    assert result.mean == pytest.approx(mean)


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(1, 0.9, 1), (9, 0.9, 9), (10, 0.9, 9), (100, 0.9, 90), (101, 0.9, 91), (10, 0.7, 7),
     (10, 1.0, 10), (4, 0.5, 2), (3, 0.01, 1)],
)  # fmt: skip
def test_nearest_rank_is_a_sample(n: int, fraction: float, expected: int) -> None:
    samples = [float(i) for i in range(n, 0, -1)]
    assert nearest_rank(samples, fraction) == float(expected)


@pytest.mark.parametrize(("samples", "fraction"), [([], 0.9), ([1.0], 0.0), ([1.0], 1.5)])
def test_nearest_rank_rejects(samples: list[float], fraction: float) -> None:
    with pytest.raises(ValueError):
        nearest_rank(samples, fraction)


@pytest.mark.parametrize(
    ("samples", "robust"),
    [
        ((1.0,), 1.0),  # at least one sample
        ((3.0, 1.0, 2.0), 1.0),
        (tuple(float(i) for i in range(10, 0, -1)), 1.0),  # a tenth of 10: the fastest
        (tuple(float(i) for i in range(1, 12)), 1.5),  # ceil(1.1) = 2: mean of 1 and 2
        (tuple(float(i) for i in range(20, 0, -1)), 1.5),
        ((5.0,) * 45 + (1.0, 2.0, 3.0, 4.0, 5.0), 3.0),  # 50 runs: the fastest five
        ((0.004, 0.0041, 0.030, 0.0042, 0.012) * 10, 0.004),  # interference never lowers it
    ],
)
def test_robust_is_the_mean_of_the_fastest_tenth(samples: tuple[float, ...], robust: float) -> None:
    result = LatencyResult(samples_seconds=samples, device="d")
    assert result.robust == pytest.approx(robust)
    assert result.min <= result.robust <= result.median


def test_robust_ignores_slow_outliers_the_median_follows() -> None:
    quiet = tuple(0.002 + i * 1e-6 for i in range(50))
    # Half the runs of a noisy call were preempted: the median jumps, the robust figure not.
    noisy = quiet[:25] + tuple(0.003 + i * 1e-6 for i in range(25))
    a, b = (LatencyResult(samples_seconds=s, device="d") for s in (quiet, noisy))
    assert b.median > 1.2 * a.median
    assert b.robust == a.robust


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.1, 1.0), (0.25, 2.0), (0.5, 3.0), (1.0, 5.5), (0.01, 1.0)]
)
def test_fastest_mean(fraction: float, expected: float) -> None:
    assert fastest_mean([float(i) for i in range(10, 0, -1)], fraction) == expected


@pytest.mark.parametrize(("samples", "fraction"), [([], 0.1), ([1.0], 0.0), ([1.0], 1.5)])
def test_fastest_mean_rejects(samples: list[float], fraction: float) -> None:
    with pytest.raises(ValueError):
        fastest_mean(samples, fraction)


def test_result_needs_samples() -> None:
    with pytest.raises(ValueError, match="samples_seconds"):
        LatencyResult(samples_seconds=(), device="d")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (MeasureSettings(warmup_runs=-1), "settings.warmup_runs"),
        (MeasureSettings(runs=0), "settings.runs"),
        (MeasureSettings(runs=10**6), "settings.runs"),
        (MeasureSettings(threads=0), "settings.threads"),
        (MeasureSettings(runs=2.5), "settings.runs"),  # type: ignore[arg-type]
        (MeasureSettings(threads=True), "settings.threads"),
    ],
)
def test_settings_validation_names_the_field(settings: MeasureSettings, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        settings.validate()


def test_host_cpu_model_is_named() -> None:
    assert host_cpu_model().strip()


# --- conformance: every oracle ----------------------------------------------------------


def test_lists_its_devices(oracle: LatencyOracle) -> None:
    devices = oracle.devices()
    assert devices
    for device in devices:
        assert device.device_class == oracle.device_class
        assert device.id and device.model
        assert device.state == "ready"


@pytest.mark.parametrize("threads", [1, 2])
def test_measures_runs_positive_samples(
    oracle: LatencyOracle, tiny_model: bytes, threads: int
) -> None:
    result = oracle.measure(tiny_model, MeasureSettings(warmup_runs=2, runs=7, threads=threads))
    assert len(result.samples_seconds) == 7
    assert all(s > 0 for s in result.samples_seconds)
    assert result.min <= result.median <= result.p90 <= max(result.samples_seconds)
    assert result.min <= result.mean <= max(result.samples_seconds)
    assert result.min <= result.robust <= result.median
    assert result.mean == pytest.approx(math.fsum(result.samples_seconds) / 7)
    assert result.device in {d.id for d in oracle.devices()}


def test_zero_warmup_and_one_run(oracle: LatencyOracle, tiny_model: bytes) -> None:
    result = oracle.measure(tiny_model, MeasureSettings(warmup_runs=0, runs=1))
    assert len(result.samples_seconds) == 1
    assert result.min == result.median == result.p90 == result.mean


def test_rejects_invalid_settings(oracle: LatencyOracle, tiny_model: bytes) -> None:
    with pytest.raises(ValueError, match=r"^settings\.runs:"):
        oracle.measure(tiny_model, MeasureSettings(runs=0))


def test_rejects_a_model_that_is_not_a_flatbuffer(oracle: LatencyOracle) -> None:
    with pytest.raises(Exception):  # noqa: B017 - each runtime raises its own error
        oracle.measure(b"not a model", MeasureSettings(runs=1))


# --- the host oracle ----------------------------------------------------------------------


def test_host_oracle_is_one_host_cpu_device() -> None:
    oracle = HostOracle(model="Test CPU 9000")
    assert oracle.device_class == HOST_CPU
    assert oracle.runs_on_host
    (device,) = oracle.devices()
    assert (device.id, device.model, device.state) == ("Test CPU 9000", "Test CPU 9000", "ready")


def test_default_settings_give_the_robust_figure_several_samples() -> None:
    assert math.ceil(MeasureSettings().runs / 10) >= 5


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_host_oracle_pins_only_while_it_measures(tiny_model: bytes) -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    oracle = HostOracle(cpu=cpu)
    seen: list[set[int]] = []
    from ai_edge_litert import interpreter as litert

    original = litert.Interpreter.invoke

    def spy(self: litert.Interpreter) -> None:
        seen.append(set(os.sched_getaffinity(0)))
        original(self)

    litert.Interpreter.invoke = spy
    try:
        result = oracle.measure(tiny_model, MeasureSettings(warmup_runs=1, runs=3))
    finally:
        litert.Interpreter.invoke = original
    assert len(result.samples_seconds) == 3
    assert seen and all(s == {cpu} for s in seen)
    assert os.sched_getaffinity(0) == before


@pytest.mark.parametrize("cpu", [-1, True])
def test_host_oracle_rejects_a_bad_cpu(cpu: int) -> None:
    with pytest.raises(ValueError, match=r"^cpu"):
        HostOracle(cpu=cpu)


@pytest.mark.parametrize(
    ("samples", "references", "baseline", "robust"),
    [
        ((2.0, 4.0, 3.0), (1.0, 2.0, 1.0), 0.5, 1.0),  # ratios 2, 2, 3: median 2
        ((0.010, 0.011, 0.012), (0.005, 0.0055, 0.006), 0.004, 0.008),  # all slowed alike
        ((5.0,), (2.0,), 1.0, 2.5),
    ],
)
def test_robust_with_references_is_the_median_ratio_times_the_baseline(
    samples: tuple[float, ...], references: tuple[float, ...], baseline: float, robust: float
) -> None:
    result = LatencyResult(
        samples_seconds=samples,
        device="d",
        reference_seconds=references,
        reference_baseline_seconds=baseline,
    )
    assert result.robust == pytest.approx(robust)


def test_robust_with_references_cancels_a_slowdown_of_the_whole_machine() -> None:
    quiet = [0.004 + i * 1e-6 for i in range(50)]
    reference = [0.001 + i * 2.5e-7 for i in range(50)]
    slow = [1.08 * s for s in quiet]  # the whole measurement 8% slower: the clock dropped
    slow_reference = [1.08 * s for s in reference]
    a = LatencyResult(tuple(quiet), "d", tuple(reference), 0.001)
    b = LatencyResult(tuple(slow), "d", tuple(slow_reference), 0.001)
    assert b.robust == pytest.approx(a.robust)
    assert fastest_mean(slow, 0.1) == pytest.approx(1.08 * fastest_mean(quiet, 0.1))


@pytest.mark.parametrize(
    ("references", "baseline", "field"),
    [((1.0,), 1.0, "reference_seconds"), ((1.0, 1.0), 0.0, "reference_baseline_seconds")],
)
def test_result_checks_its_references(
    references: tuple[float, ...], baseline: float, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        LatencyResult((1.0, 2.0), "d", references, baseline)


def test_host_oracle_times_a_reference_after_every_run(tiny_model: bytes) -> None:
    oracle = HostOracle(reference=tiny_model, baseline_runs=5)
    first = oracle.measure(tiny_model, MeasureSettings(warmup_runs=1, runs=6))
    second = oracle.measure(tiny_model, MeasureSettings(warmup_runs=0, runs=3))
    for result, runs in ((first, 6), (second, 3)):
        assert len(result.samples_seconds) == len(result.reference_seconds) == runs
        assert all(r > 0 for r in result.reference_seconds)
        assert result.robust > 0
    # The baseline is timed once and kept.
    assert first.reference_baseline_seconds == second.reference_baseline_seconds > 0
    plain = HostOracle().measure(tiny_model, MeasureSettings(warmup_runs=0, runs=3))
    assert plain.reference_seconds == () and plain.reference_baseline_seconds == 0.0


def test_host_oracle_takes_a_fixed_reference_baseline(tiny_model: bytes) -> None:
    oracle = HostOracle(reference=tiny_model, reference_baseline=0.25)
    result = oracle.measure(tiny_model, MeasureSettings(warmup_runs=0, runs=2))
    assert result.reference_baseline_seconds == 0.25
    with pytest.raises(ValueError, match=r"^reference_baseline"):
        HostOracle(reference=tiny_model, reference_baseline=0.0)

"""Latency oracles: statistics, settings, and every oracle through the same conformance checks."""

from __future__ import annotations

import math
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

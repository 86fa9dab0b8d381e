"""The latency service's proto <-> domain conversions (no gRPC): requests' settings and
build parameters in, measurements and devices out.

Unset (zero) fields of ``LatencySettings`` take the defaults written in common.proto:
device class ``host-cpu``, 5 warm-up runs, 50 runs, 1 thread. ``settings.resolution``,
when set, is the deployment resolution and must agree with ``build.resolution`` where
that is set too.
"""

from __future__ import annotations

from mnas.build import BuildParams
from mnas.defaults import DEFAULT_RUNS, DEFAULT_THREADS, DEFAULT_WARMUP_RUNS
from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, latency_pb2
from services.latency.oracle import HOST_CPU, MeasureSettings
from services.latency.phones.oracle import PhoneLatencyResult, PhoneOracle
from services.latency.service import LatencyService, Measurement

__all__ = [
    "build_from_proto",
    "devices_to_proto",
    "settings_from_proto",
    "stats_to_proto",
]


def settings_from_proto(message: common_pb2.LatencySettings) -> tuple[str, MeasureSettings]:
    """The device class and measure settings, zero fields taking their defaults."""
    return message.device_class or HOST_CPU, MeasureSettings(
        warmup_runs=message.warmup_runs or DEFAULT_WARMUP_RUNS,
        runs=message.runs or DEFAULT_RUNS,
        threads=message.threads or DEFAULT_THREADS,
    )


def build_from_proto(
    build: common_pb2.BuildParams, settings: common_pb2.LatencySettings
) -> BuildParams:
    """The build parameters; ``settings.resolution`` stands in for an unset resolution.
    :class:`~mnas.errors.InvalidInput` says which resolution is wrong."""
    resolution = build.resolution
    if settings.resolution:
        if settings.resolution < 0:
            raise InvalidInput(
                f"settings.resolution: must be >= 0 (0: build.resolution), "
                f"got {settings.resolution}"
            )
        if build.resolution and build.resolution != settings.resolution:
            raise InvalidInput(
                f"settings.resolution: {settings.resolution} differs from "
                f"build.resolution {build.resolution}"
            )
        resolution = settings.resolution
    return BuildParams(resolution=resolution, num_classes=build.num_classes, width=build.width)


def stats_to_proto(measurement: Measurement) -> common_pb2.LatencyStats:
    """A measurement's statistics; a phone's also carry its flags and thermal wait."""
    result = measurement.result
    stats = common_pb2.LatencyStats(
        robust_seconds=result.robust,
        median_seconds=result.median,
        min_seconds=result.min,
        p90_seconds=result.p90,
        mean_seconds=result.mean,
        samples_seconds=list(result.samples_seconds),
        device_class=measurement.device_class,
        device=result.device,
    )
    if isinstance(result, PhoneLatencyResult):
        stats.flags.extend(result.flags)
        stats.thermal_wait_seconds = result.waited_seconds
    return stats


def devices_to_proto(service: LatencyService) -> list[latency_pb2.Device]:
    """Every device of every oracle (phones with what adb reports and their last reading),
    then every predictor."""
    devices: list[latency_pb2.Device] = []
    for oracle in service.oracles:
        if not isinstance(oracle, PhoneOracle):
            devices.extend(
                latency_pb2.Device(
                    id=d.id, device_class=d.device_class, model=d.model, state=d.state
                )
                for d in oracle.devices()
            )
            continue
        for phone in oracle.phones():
            device = latency_pb2.Device(
                id=phone.details.serial,
                device_class=phone.device_class,
                model=phone.details.model,
                state=phone.state,
                android_version=phone.details.android_version,
                abi=phone.details.abi,
                health_reason=phone.reason,
                consecutive_failures=phone.consecutive_failures,
            )
            reading = phone.last_state
            if reading is not None:
                if reading.temperature_c is not None:
                    device.temperature_celsius = reading.temperature_c
                if reading.thermal_status is not None:
                    device.thermal_status = reading.thermal_status
                if reading.battery.level is not None:
                    device.battery_level = reading.battery.level
                device.powered = reading.battery.powered
                device.cpu_governor = reading.governor or ""
            devices.append(device)
    for predictor in service.predictors:
        devices.extend(
            latency_pb2.Device(id=d.id, device_class=d.device_class, model=d.model, state=d.state)
            for d in predictor.devices()
        )
    return devices

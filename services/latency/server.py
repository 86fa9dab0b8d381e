"""The Latency servicer: proto in, :class:`LatencyService`, proto out, plus its metrics.

Unset (zero) fields of ``LatencySettings`` take the defaults written in common.proto:
device class ``host-cpu``, 5 warm-up runs, 50 runs, 1 thread. ``settings.resolution``,
when set, is the deployment resolution and must agree with ``build.resolution`` where
that is set too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mnas.errors import InvalidInput
from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.common.server import RunningServer, build_server
from services.latency.oracle import HOST_CPU, HostOracle, LatencyOracle, MeasureSettings
from services.latency.phones.adb import PhoneConnectionError
from services.latency.phones.benchmark_output import BenchmarkFailed
from services.latency.phones.metrics import PhoneCollector
from services.latency.phones.oracle import NoPhoneAvailable, PhoneLatencyResult, PhoneOracle
from services.latency.phones.runner import PhoneSetupError
from services.latency.predictor.adapter import PredictedLatency
from services.latency.service import (
    DEFAULT_CACHE_SIZE,
    BuildParams,
    Exporter,
    LatencyService,
    Measurement,
    NotCalibrated,
)

__all__ = [
    "SERVICE_NAME",
    "LatencyMetrics",
    "LatencyServicer",
    "build_from_proto",
    "make_server",
    "settings_from_proto",
    "stats_to_proto",
]

_logger = logging.getLogger(__name__)

SERVICE_NAME = "mnas.v1.Latency"

DEFAULT_WARMUP_RUNS = 5
DEFAULT_RUNS = 50
DEFAULT_THREADS = 1

# Domain errors to status codes, first match wins; anything else is INTERNAL.
_STATUS_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    # The phone's benchmark tool refused the model: another phone of the class would too.
    (BenchmarkFailed, grpc.StatusCode.FAILED_PRECONDITION),
    # No healthy phone left, or one fell off the bus: another latency service may have one.
    (NoPhoneAvailable, grpc.StatusCode.UNAVAILABLE),
    # The predictor was calibrated at other sizes: asking again will not help.
    (NotCalibrated, grpc.StatusCode.FAILED_PRECONDITION),
    (PhoneConnectionError, grpc.StatusCode.UNAVAILABLE),
    (PhoneSetupError, grpc.StatusCode.UNAVAILABLE),
)

_MODEL_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0,
)  # fmt: skip
_EXPORT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
_MEASURE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def status_code(err: Exception) -> grpc.StatusCode:
    """The status code an exception from the core maps to."""
    for kind, code in _STATUS_CODES:
        if isinstance(err, kind):
            return code
    return grpc.StatusCode.INTERNAL


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
    """The build parameters; ``settings.resolution`` stands in for an unset resolution."""
    resolution = build.resolution
    if settings.resolution:
        if settings.resolution < 0:
            raise ValueError(
                f"settings.resolution: must be >= 0 (0: build.resolution), "
                f"got {settings.resolution}"
            )
        if build.resolution and build.resolution != settings.resolution:
            raise ValueError(
                f"settings.resolution: {settings.resolution} differs from "
                f"build.resolution {build.resolution}"
            )
        resolution = settings.resolution
    return BuildParams(resolution=resolution, num_classes=build.num_classes, width=build.width)


def stats_to_proto(measurement: Measurement) -> common_pb2.LatencyStats:
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


class LatencyMetrics:
    """The latency service's metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, service: LatencyService) -> None:
        self.measurements = Counter(
            "mnas_latency_measurements_total",
            "Measure calls answered, by device class and whether from the cache.",
            ("device_class", "cached"),
            registry=registry,
        )
        self.model_seconds = Histogram(
            "mnas_latency_model_latency_seconds",
            "Latency (robust figure) of the models measured (not counting cache hits), by device "
            "class and device model.",
            ("device_class", "device_model"),
            buckets=_MODEL_BUCKETS,
            registry=registry,
        )
        self.export_seconds = Histogram(
            "mnas_latency_export_seconds",
            "Time to build and export a model to a flatbuffer.",
            buckets=_EXPORT_BUCKETS,
            registry=registry,
        )
        self.measure_seconds = Histogram(
            "mnas_latency_measure_seconds",
            "Wall time of one measurement on a device (warm-up and timed runs).",
            ("device_class",),
            buckets=_MEASURE_BUCKETS,
            registry=registry,
        )
        cache_entries = Gauge(
            "mnas_latency_cache_entries",
            "Results held in the latency cache.",
            registry=registry,
        )
        cache_entries.set_function(lambda: service.cache_entries)
        in_flight = Gauge(
            "mnas_latency_measurements_in_flight",
            "Measurements running or waiting for a device.",
            registry=registry,
        )
        in_flight.set_function(lambda: service.in_flight)
        phones = [o for o in service.oracles if isinstance(o, PhoneOracle)]
        if phones:
            registry.register(PhoneCollector(phones))

    def observe(self, measurement: Measurement, model: str) -> None:
        device_class = measurement.device_class
        self.measurements.labels(device_class, "true" if measurement.cached else "false").inc()
        if not measurement.cached:
            self.model_seconds.labels(device_class, model).observe(measurement.result.robust)
            self.export_seconds.observe(measurement.export_seconds)
            self.measure_seconds.labels(device_class).observe(measurement.measure_seconds)


class LatencyServicer(latency_pb2_grpc.LatencyServicer):
    def __init__(self, service: LatencyService, registry: CollectorRegistry) -> None:
        self._service = service
        self._metrics = LatencyMetrics(registry, service)

    def Measure(
        self, request: latency_pb2.MeasureRequest, context: grpc.ServicerContext
    ) -> latency_pb2.MeasureResponse:
        try:
            try:
                device_class, settings = settings_from_proto(request.settings)
                build = build_from_proto(request.build, request.settings)
            except ValueError as err:
                raise InvalidInput(str(err)) from None
            measurement = self._service.measure(
                request.architecture.canonical,
                build=build,
                settings=settings,
                device_class=device_class,
            )
        except Exception as err:
            _abort(context, err)
        self._metrics.observe(measurement, self._model_of(measurement.result.device))
        return latency_pb2.MeasureResponse(
            stats=stats_to_proto(measurement),
            cached=measurement.cached,
            export_seconds=measurement.export_seconds,
        )

    def ListDevices(
        self, request: latency_pb2.ListDevicesRequest, context: grpc.ServicerContext
    ) -> latency_pb2.ListDevicesResponse:
        return latency_pb2.ListDevicesResponse(devices=devices_to_proto(self._service))

    def _model_of(self, device_id: str) -> str:
        """The model of the device that measured (a phone's serial -> its model)."""
        for device in self._service.devices():
            if device.id == device_id:
                return device.model
        return device_id

    def GetCapacity(
        self, request: common_pb2.GetCapacityRequest, context: grpc.ServicerContext
    ) -> common_pb2.GetCapacityResponse:
        return common_pb2.GetCapacityResponse(
            max_concurrent=self._service.capacity,
            in_flight=self._service.in_flight,
            hardware=_hardware(self._service),
        )


def make_server(
    *,
    registry: CollectorRegistry,
    port: int = 0,
    host: str = "127.0.0.1",
    oracles: Sequence[LatencyOracle] | None = None,
    exporter: Exporter | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    predictors: Sequence[PredictedLatency] = (),
    tls: ServerTLS | None = None,
    health_port: int | None = None,
) -> RunningServer:
    """Start a latency server; by default on this machine's CPU (:class:`HostOracle`)."""
    service = LatencyService(
        list(oracles) if oracles is not None else [HostOracle()],
        exporter=exporter,
        cache_size=cache_size,
        predictors=predictors,
    )
    servicer = LatencyServicer(service, registry)
    return build_server(
        service_names=[SERVICE_NAME],
        add_servicers=lambda s: latency_pb2_grpc.add_LatencyServicer_to_server(servicer, s),
        registry=registry,
        port=port,
        host=host,
        tls=tls,
        health_port=health_port,
    )


def _hardware(service: LatencyService) -> str:
    """E.g. ``host-cpu x1 (AMD EPYC)``."""
    parts = []
    for device_class in service.device_classes:
        devices = [d for d in service.devices() if d.device_class == device_class]
        models = ", ".join(sorted({d.model for d in devices}))
        parts.append(f"{device_class} x{len(devices)} ({models})")
    return "; ".join(parts)


def _abort(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    code = status_code(err)
    if code is grpc.StatusCode.INTERNAL:
        _logger.exception("Measure failed")
        context.abort(code, f"{type(err).__name__}: {err}")
    context.abort(code, str(err))

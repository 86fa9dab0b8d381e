"""The Latency servicer: proto in, :class:`LatencyService`, proto out, plus its metrics.

The conversions live in :mod:`services.latency.conversions`, where zero fields of a
request take their defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mnas.tls import ServerTLS
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.common.errors import StatusTable
from services.common.server import RunningServer, build_server
from services.latency.conversions import (
    build_from_proto,
    devices_to_proto,
    settings_from_proto,
    stats_to_proto,
)
from services.latency.oracle import HostOracle, LatencyOracle
from services.latency.phones.adb import PhoneConnectionError
from services.latency.phones.benchmark_output import BenchmarkFailed
from services.latency.phones.metrics import PhoneCollector
from services.latency.phones.oracle import NoPhoneAvailable, PhoneOracle
from services.latency.phones.runner import PhoneSetupError
from services.latency.predictor.adapter import PredictedLatency
from services.latency.service import (
    DEFAULT_CACHE_SIZE,
    Exporter,
    LatencyService,
    Measurement,
    NotCalibrated,
)

__all__ = ["SERVICE_NAME", "LatencyMetrics", "LatencyServicer", "make_server"]

_logger = logging.getLogger(__name__)

SERVICE_NAME = "mnas.v1.Latency"

_STATUS_TABLE = StatusTable.of(
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
            device_class, settings = settings_from_proto(request.settings)
            measurement = self._service.measure(
                request.architecture.canonical,
                build=build_from_proto(request.build, request.settings),
                settings=settings,
                device_class=device_class,
            )
        except Exception as err:
            _STATUS_TABLE.abort(context, err, logger=_logger, call="Measure")
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

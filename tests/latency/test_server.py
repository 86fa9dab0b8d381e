"""The latency service over a real gRPC server on loopback, and its command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.arch import Architecture
from mnas.build import BuildParams
from mnas.rpc import channel
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.common.server import RunningServer
from services.latency.oracle import HostOracle, LatencyResult, MeasureSettings
from services.latency.server import SERVICE_NAME, make_server
from tests.common.grpc_helpers import health_status, reflected_services

TINY = "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16 head:32"


class CountingHostOracle(HostOracle):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        self.calls += 1
        return super().measure(model_bytes, settings)


class BrokenOracle(HostOracle):
    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.error = error or RuntimeError("interpreter crashed")

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        raise self.error


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def oracle() -> CountingHostOracle:
    return CountingHostOracle()


@pytest.fixture
def server(registry: CollectorRegistry, oracle: CountingHostOracle) -> Iterator[RunningServer]:
    running = make_server(registry=registry, oracles=[oracle])
    yield running
    running.stop(0)


@pytest.fixture
def stub(server: RunningServer) -> latency_pb2_grpc.LatencyStub:
    return latency_pb2_grpc.LatencyStub(channel(server.address))


def measure_request(
    canonical: str = TINY,
    *,
    build: dict[str, object] | None = None,
    **settings: object,
) -> latency_pb2.MeasureRequest:
    settings.setdefault("warmup_runs", 1)
    settings.setdefault("runs", 5)
    build = build if build is not None else {"resolution": 32, "num_classes": 10, "width": 1.0}
    return latency_pb2.MeasureRequest(
        architecture=common_pb2.Architecture(canonical=canonical),
        build=common_pb2.BuildParams(**build),  # type: ignore[arg-type]
        settings=common_pb2.LatencySettings(**settings),  # type: ignore[arg-type]
    )


def test_measure_returns_stats_then_answers_from_the_cache(
    stub: latency_pb2_grpc.LatencyStub, registry: CollectorRegistry, oracle: CountingHostOracle
) -> None:
    first = stub.Measure(measure_request(), timeout=60)
    stats = first.stats
    assert not first.cached
    assert first.export_seconds > 0
    assert len(stats.samples_seconds) == 5 and all(s > 0 for s in stats.samples_seconds)
    assert stats.min_seconds <= stats.median_seconds <= stats.p90_seconds
    assert stats.min_seconds <= stats.mean_seconds <= max(stats.samples_seconds)
    assert stats.device_class == "host-cpu" and stats.device
    second = stub.Measure(measure_request(), timeout=60)
    assert second.cached
    assert second.stats == first.stats
    assert oracle.calls == 1

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("mnas_latency_measurements_total", device_class="host-cpu", cached="false") == 1
    assert value("mnas_latency_measurements_total", device_class="host-cpu", cached="true") == 1
    model = stats.device  # the host's CPU model
    assert (
        value(
            "mnas_latency_model_latency_seconds_count", device_class="host-cpu", device_model=model
        )
        == 1
    )
    assert value(
        "mnas_latency_model_latency_seconds_sum", device_class="host-cpu", device_model=model
    ) == pytest.approx(stats.robust_seconds)
    assert value("mnas_latency_export_seconds_count") == 1
    assert value("mnas_latency_measure_seconds_count", device_class="host-cpu") == 1
    assert value("mnas_latency_cache_entries") == 1
    assert value("mnas_latency_measurements_in_flight") == 0
    handled = {
        "grpc_type": "unary",
        "grpc_service": SERVICE_NAME,
        "grpc_method": "Measure",
        "grpc_code": "OK",
    }
    assert value("grpc_server_handled_total", **handled) == 2


def test_the_model_latency_histogram_spans_host_cpus_and_phones(
    stub: latency_pb2_grpc.LatencyStub, registry: CollectorRegistry
) -> None:
    """Buckets from 0.5 ms (a small network on a server CPU) to 2 s (a large one on an old
    phone); a measurement lands in every bucket at or above its robust figure."""
    stats = stub.Measure(measure_request(), timeout=60).stats
    labels = {"device_class": "host-cpu", "device_model": stats.device}
    (family,) = (m for m in registry.collect() if m.name == "mnas_latency_model_latency_seconds")
    bounds = [
        s.labels["le"]
        for s in family.samples
        if s.name == "mnas_latency_model_latency_seconds_bucket"
        and s.labels["device_model"] == stats.device
    ]
    finite = [float(b) for b in bounds if b != "+Inf"]
    assert finite[0] == 0.0005 and finite[-1] == 2.0 and finite == sorted(finite)
    assert "+Inf" in bounds
    for bound in bounds:
        count = registry.get_sample_value(
            "mnas_latency_model_latency_seconds_bucket", {**labels, "le": bound}
        )
        assert count == (1 if stats.robust_seconds <= float(bound) else 0), bound


def test_unset_settings_take_the_documented_defaults(stub: latency_pb2_grpc.LatencyStub) -> None:
    request = latency_pb2.MeasureRequest(
        architecture=common_pb2.Architecture(canonical=TINY),
        build=common_pb2.BuildParams(num_classes=10, width=1.0),
        settings=common_pb2.LatencySettings(resolution=32),
    )
    response = stub.Measure(request, timeout=60)
    assert len(response.stats.samples_seconds) == 50
    assert response.stats.device_class == "host-cpu"


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (measure_request("r1_k3_s11_e1"), "architecture.canonical"),
        (measure_request(""), "architecture.canonical"),
        (measure_request(device_class="pixel-1"), "settings.device_class"),
        (measure_request(runs=-1), "settings.runs"),
        (measure_request(warmup_runs=-2), "settings.warmup_runs"),
        (measure_request(threads=-1), "settings.threads"),
        (measure_request(resolution=64), "settings.resolution"),
        (measure_request(build={"resolution": 1, "num_classes": 9}), "build.resolution"),
        (measure_request(build={"resolution": 32, "width": 1.0}), "build.num_classes"),
        (measure_request(build={"resolution": 32, "num_classes": 10}), "build.width"),
    ],
)  # fmt: skip
def test_invalid_requests_are_invalid_argument_naming_the_field(
    stub: latency_pb2_grpc.LatencyStub,
    registry: CollectorRegistry,
    oracle: CountingHostOracle,
    request_: latency_pb2.MeasureRequest,
    needle: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Measure(request_, timeout=60)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert needle in str(info.value.details())
    assert oracle.calls == 0
    if needle == "settings.device_class":
        assert "host-cpu" in str(info.value.details())
    labels = {
        "grpc_type": "unary",
        "grpc_service": SERVICE_NAME,
        "grpc_method": "Measure",
        "grpc_code": "INVALID_ARGUMENT",
    }
    assert registry.get_sample_value("grpc_server_handled_total", labels) == 1


@pytest.mark.parametrize(
    "error",
    # A ValueError from inside the measurement is the oracle's failure, not bad input.
    [RuntimeError("interpreter crashed"), ValueError("interpreter crashed: bad tensor")],
    ids=["runtime-error", "value-error"],
)
def test_oracle_failures_are_internal(registry: CollectorRegistry, error: Exception) -> None:
    def export(arch: Architecture, build: BuildParams) -> bytes:
        return b"model"

    running = make_server(registry=registry, oracles=[BrokenOracle(error)], exporter=export)
    try:
        stub = latency_pb2_grpc.LatencyStub(channel(running.address))
        with pytest.raises(grpc.RpcError) as info:
            stub.Measure(measure_request(), timeout=60)
    finally:
        running.stop(0)
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "interpreter crashed" in str(info.value.details())
    assert (
        registry.get_sample_value(
            "mnas_latency_measurements_total", {"device_class": "host-cpu", "cached": "false"}
        )
        is None
    )


def test_list_devices_and_capacity(stub: latency_pb2_grpc.LatencyStub) -> None:
    devices = stub.ListDevices(latency_pb2.ListDevicesRequest(), timeout=10).devices
    assert [d.device_class for d in devices] == ["host-cpu"]
    assert devices[0].id and devices[0].model and devices[0].state == "ready"
    capacity = stub.GetCapacity(common_pb2.GetCapacityRequest(), timeout=10)
    assert capacity.max_concurrent == 1
    assert capacity.in_flight == 0
    assert capacity.hardware.startswith("host-cpu x1")


def test_health_and_reflection(server: RunningServer) -> None:
    assert health_status(server.address, SERVICE_NAME) == "SERVING"
    assert SERVICE_NAME in reflected_services(server.address)
    server.health.enter_graceful_shutdown()
    assert health_status(server.address, SERVICE_NAME) == "NOT_SERVING"


def test_command_line_serves_measures_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.latency", "--port", "0", "--log-level", "INFO"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            found = re.search(rf"serving {re.escape(SERVICE_NAME)} on port (\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, "the server never said it was serving"
        address = f"127.0.0.1:{port}"
        assert health_status(address, SERVICE_NAME) == "SERVING"
        stub = latency_pb2_grpc.LatencyStub(channel(address))
        response = stub.Measure(measure_request(runs=2), timeout=120)
        assert len(response.stats.samples_seconds) == 2
        assert response.stats.device_class == "host-cpu"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

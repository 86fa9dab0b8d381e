"""Phones behind the latency service over real gRPC, and the ``mnas devices`` and
``mnas latency measure`` commands. No phone is attached: the phones are the loopback adb
peer's, and their ``benchmark_model`` is the stub running LiteRT on this machine."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.cli import main
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.common.server import RunningServer
from services.latency.oracle import HostOracle
from services.latency.phones.adb import AdbServer
from services.latency.phones.discovery import discover
from services.latency.phones.oracle import PhoneOracle
from services.latency.phones.profiles import PhoneProfile
from services.latency.server import make_server
from tests.latency.phones.adb_peer import AdbPeer
from tests.latency.phones.conftest import TINY, FakeClock, with_thermal


@pytest.fixture
def phones(peer: AdbPeer, server: AdbServer, profile: PhoneProfile) -> PhoneOracle:
    peer.add_phone("PIXEL-A", model="Pixel 1", android_version="10", abi="arm64-v8a")
    clock = FakeClock()
    flagging = with_thermal(profile, action="flag")
    return PhoneOracle(flagging, discover(server), clock=clock, sleep=clock.sleep)


@pytest.fixture
def service(phones: PhoneOracle) -> Iterator[tuple[RunningServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    running = make_server(registry=registry, oracles=[HostOracle(), phones])
    yield running, registry
    running.stop(0)


def measure_request(**settings: object) -> latency_pb2.MeasureRequest:
    return latency_pb2.MeasureRequest(
        architecture=common_pb2.Architecture(canonical=TINY),
        build=common_pb2.BuildParams(resolution=16, num_classes=4, width=1.0),
        settings=common_pb2.LatencySettings(
            device_class="pixel-1",
            warmup_runs=1,
            runs=3,
            **settings,  # type: ignore[arg-type]
        ),
    )


def test_devices_list_phones_with_their_details_and_last_reading(
    service: tuple[RunningServer, CollectorRegistry],
) -> None:
    running, registry = service
    with grpc.insecure_channel(running.address) as channel:
        stub = latency_pb2_grpc.LatencyStub(channel)
        before = {d.id: d for d in stub.ListDevices(latency_pb2.ListDevicesRequest()).devices}
        response = stub.Measure(measure_request(), timeout=120)
        after = {d.id: d for d in stub.ListDevices(latency_pb2.ListDevicesRequest()).devices}
    phone = before["PIXEL-A"]
    assert (phone.device_class, phone.model, phone.state) == ("pixel-1", "Pixel 1", "ready")
    assert (phone.android_version, phone.abi) == ("10", "arm64-v8a")
    assert not phone.HasField("temperature_celsius")  # nothing read before a measurement
    assert len(before) == 2  # and the host CPU
    read = after["PIXEL-A"]
    assert read.temperature_celsius == pytest.approx(35.0)
    assert (read.battery_level, read.cpu_governor) == (90, "schedutil")
    assert response.stats.device == "PIXEL-A"
    assert response.stats.device_class == "pixel-1"
    assert list(response.stats.flags) == []
    # The latency histogram is kept per device model.
    count = registry.get_sample_value(
        "mnas_latency_model_latency_seconds_count",
        {"device_class": "pixel-1", "device_model": "Pixel 1"},
    )
    assert count == 1


def test_a_hot_phone_is_flagged_in_the_response(
    peer: AdbPeer, service: tuple[RunningServer, CollectorRegistry]
) -> None:
    running, _ = service
    peer.phone("PIXEL-A").set_temperature(50.0)
    with grpc.insecure_channel(running.address) as channel:
        stub = latency_pb2_grpc.LatencyStub(channel)
        response = stub.Measure(measure_request(), timeout=120)
    assert "hot" in response.stats.flags


def test_mnas_devices_and_latency_measure_through_the_service(
    service: tuple[RunningServer, CollectorRegistry], capsys: pytest.CaptureFixture[str]
) -> None:
    running, _ = service
    target = ["--target", running.address]
    assert main(["devices", *target, "--json"]) == 0
    devices = {d["id"]: d for d in json.loads(capsys.readouterr().out)}
    assert devices["PIXEL-A"]["android_version"] == "10"
    assert devices["PIXEL-A"]["state"] == "ready"
    assert main(["devices", *target]) == 0
    assert "PIXEL-A" in capsys.readouterr().out
    command = ["latency", "measure", "--blocks", TINY.split(" ", 1)[1].rsplit(" ", 1)[0]]
    build = ["--resolution", "16", "--classes", "4", "--runs", "3", "--warmup-runs", "1"]
    assert main([*command, *build, "--device-class", "pixel-1", *target, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["device_class"], result["device"]) == ("pixel-1", "PIXEL-A")
    assert result["median_seconds"] > 0
    # --local measures in this process on the host CPU; a phone class is refused there.
    assert main([*command, *build, "--local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device_class"] == "host-cpu"
    assert main([*command, *build, "--local", "--device-class", "pixel-1"]) == 2
    assert "--local measures on host-cpu" in capsys.readouterr().err


def test_phone_gauges_show_health_temperature_and_battery_by_serial(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile
) -> None:
    """The first phone falls off the bus at its first command: it is benched and the
    measurement moves to the second, whose reading the gauges then show."""
    peer.add_phone("PIXEL-A")
    peer.add_phone("PIXEL-B", temperature_c=41.5, battery_level=77, usb_powered=False)
    clock = FakeClock()
    oracle = PhoneOracle(profile, discover(server), clock=clock, sleep=clock.sleep)
    registry = CollectorRegistry()
    running = make_server(registry=registry, oracles=[HostOracle(), oracle])

    def value(name: str, serial: str) -> float | None:
        labels = {"device_class": "pixel-1", "device_model": "Pixel 1", "serial": serial}
        return registry.get_sample_value(f"mnas_phone_{name}", labels)

    try:
        assert [value("healthy", s) for s in ("PIXEL-A", "PIXEL-B")] == [1, 1]
        assert value("busy", "PIXEL-A") == 0
        assert value("temperature_celsius", "PIXEL-B") is None  # nothing read yet
        peer.drop("PIXEL-A")
        with grpc.insecure_channel(running.address) as channel:
            stub = latency_pb2_grpc.LatencyStub(channel)
            response = stub.Measure(measure_request(), timeout=120)
        assert response.stats.device == "PIXEL-B"
        assert value("healthy", "PIXEL-A") == 0
        assert value("temperature_celsius", "PIXEL-A") is None
        assert value("healthy", "PIXEL-B") == 1
        assert value("busy", "PIXEL-B") == 0
        assert value("temperature_celsius", "PIXEL-B") == pytest.approx(41.5)
        assert value("battery_ratio", "PIXEL-B") == pytest.approx(0.77)
        assert value("powered", "PIXEL-B") == 0
    finally:
        running.stop(0)


def test_a_latency_service_without_phones_has_no_phone_series() -> None:
    registry = CollectorRegistry()
    running = make_server(registry=registry, oracles=[HostOracle()])
    running.stop(0)
    names = {metric.name for metric in registry.collect()}
    assert "mnas_latency_model_latency_seconds" in names
    assert not any(name.startswith("mnas_phone_") for name in names)

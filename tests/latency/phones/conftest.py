"""Fixtures for the phone tests: a loopback adb peer, the stub tool, a tiny model, a clock."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.latency.phones.adb import AdbServer
from services.latency.phones.profiles import AdbEndpoint, PhoneProfile, ThermalPolicy
from tests.latency.phones.adb_peer import AdbPeer

STUB = Path(__file__).with_name("benchmark_model_stub.py")
TINY = "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16_se0.25 head:16"


class FakeClock:
    """A monotonic clock that only ``sleep`` moves; ``on_sleep`` runs after each sleep."""

    def __init__(self, on_sleep: Callable[[FakeClock], None] | None = None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self)


@pytest.fixture(scope="session")
def tiny_model() -> bytes:
    """A small real ``.tflite`` (TensorFlow loads once per session)."""
    from mnas.arch import decode
    from services.latency.export import export_arch

    return export_arch(decode(TINY), num_classes=4, resolution=16, width=1.0)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[AdbPeer]:
    with AdbPeer(tmp_path / "peer") as running:
        yield running


@pytest.fixture
def server(peer: AdbPeer) -> AdbServer:
    return AdbServer(AdbEndpoint(port=peer.port, timeout_seconds=30.0))


@pytest.fixture
def benchmark_binary(tmp_path: Path) -> Path:
    """The host-side "benchmark_model": a script that runs the stub with this Python."""
    binary = tmp_path / "host" / "benchmark_model"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{STUB}' \"$@\"\n")
    binary.chmod(0o755)
    return binary


@pytest.fixture
def profile(benchmark_binary: Path) -> PhoneProfile:
    """A Pixel 1 profile pinned to CPU 0 (which this machine has), failing fast."""
    return PhoneProfile(
        model="Pixel 1",
        benchmark_binary=benchmark_binary,
        cpu_mask="1",
        failure_threshold=1,
        reprobe_seconds=60.0,
        thermal=ThermalPolicy(max_temperature_c=45.0, action="wait", max_wait_seconds=120.0),
    )


def with_thermal(profile: PhoneProfile, **changes: object) -> PhoneProfile:
    return replace(profile, thermal=replace(profile.thermal, **changes))  # type: ignore[arg-type]

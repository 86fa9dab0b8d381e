"""The phone oracle end to end through adbutils and the loopback adb peer (no phone
attached): discovery, pushes, a real benchmark run of a tiny model, the thermal policy,
one run per phone, and phones that drop out and come back."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from services.latency.oracle import MeasureSettings
from services.latency.phones.adb import AdbServer
from services.latency.phones.benchmark_output import BenchmarkFailed
from services.latency.phones.discovery import PhoneDetails, discover
from services.latency.phones.farm import build_phone_oracles, phone_oracles_from_file
from services.latency.phones.oracle import NoPhoneAvailable, PhoneOracle
from services.latency.phones.profiles import PhoneProfile
from tests.latency.phones.adb_peer import AdbPeer
from tests.latency.phones.conftest import FakeClock, with_thermal

REMOTE = "/data/local/tmp/mnas"
SETTINGS = MeasureSettings(warmup_runs=2, runs=7, threads=1)


def _oracle(
    server: AdbServer, profile: PhoneProfile, clock: FakeClock | None = None
) -> PhoneOracle:
    clock = clock or FakeClock()
    return PhoneOracle(profile, discover(server), clock=clock, sleep=clock.sleep)


def _benchmarks(peer: AdbPeer, serial: str) -> list[str]:
    return [c for c in peer.phone(serial).shells if "benchmark_model --graph" in c]


def _models_left(peer: AdbPeer, serial: str) -> list[str]:
    return sorted(p.name for p in peer.phone(serial).host_path(REMOTE).glob("*.tflite"))


def test_discovery_reads_serial_model_version_and_abi(peer: AdbPeer, server: AdbServer) -> None:
    peer.add_phone("PIXEL-A", model="Pixel 1", android_version="10", abi="arm64-v8a")
    peer.add_phone("GALAXY-B", model="SM-G960F", android_version="9", abi="armeabi-v7a")
    peer.add_phone("GONE-C")
    peer.drop("GONE-C")
    assert [p.details for p in discover(server)] == [
        PhoneDetails(serial="PIXEL-A", model="Pixel 1", android_version="10", abi="arm64-v8a"),
        PhoneDetails(serial="GALAXY-B", model="SM-G960F", android_version="9", abi="armeabi-v7a"),
    ]


def test_a_benchmark_run_end_to_end(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    peer.add_phone("PIXEL-A")
    oracle = _oracle(server, profile)
    assert oracle.device_class == "pixel-1"
    assert [(d.id, d.model, d.state) for d in oracle.devices()] == [("PIXEL-A", "Pixel 1", "ready")]

    result = oracle.measure(tiny_model, SETTINGS)

    (command,) = _benchmarks(peer, "PIXEL-A")
    assert command.startswith(f"taskset 1 {REMOTE}/benchmark_model --graph={REMOTE}/model-")
    assert command.endswith(
        ".tflite --num_threads=1 --warmup_runs=2 --num_runs=7 --min_secs=0; echo X4EXIT:$?"
    )
    (output,) = result.outputs
    assert output.inference.count == 7
    assert output.warmup is not None and output.warmup.count >= 2
    assert output.inference.min <= output.inference.avg <= output.inference.max
    assert len(result.samples_seconds) == 1
    assert result.samples_seconds[0] == pytest.approx(output.inference.avg * 1e-6)
    assert 0 < result.median < 1
    assert result.device == "PIXEL-A"
    assert result.flags == ()
    assert result.phone_state is not None
    assert (result.phone_state.temperature_c, result.phone_state.governor) == (35.0, "schedutil")
    assert result.phone_state.battery.level == 90
    assert oracle.phones()[0].last_state == result.phone_state


def test_binary_pushed_once_per_phone_and_models_deleted(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    phone = peer.add_phone("PIXEL-A")
    oracle = _oracle(server, profile)
    oracle.measure(tiny_model, SETTINGS)
    oracle.measure(tiny_model, replace(SETTINGS, runs=3))
    binaries = [p for p in phone.pushes if p.endswith("/benchmark_model")]
    models = [p for p in phone.pushes if p.endswith(".tflite")]
    assert binaries == [f"{REMOTE}/benchmark_model"]
    assert len(models) == 2 and models[0].startswith(f"{REMOTE}/model-")
    assert phone.host_path(models[0]).exists() is False
    assert _models_left(peer, "PIXEL-A") == []
    pushed = phone.host_path(f"{REMOTE}/benchmark_model")
    assert pushed.read_bytes() == profile.benchmark_binary.read_bytes()
    assert pushed.stat().st_mode & 0o111
    assert any(f"rm -f {models[0]}" in c for c in phone.shells)


def test_binary_not_pushed_when_the_same_size_is_there(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    same = peer.add_phone("SAME")
    other = peer.add_phone("OTHER")
    for phone, data in ((same, profile.benchmark_binary.read_bytes()), (other, b"#!/bin/sh\n")):
        target = phone.host_path(f"{REMOTE}/benchmark_model")
        target.parent.mkdir(parents=True)
        target.write_bytes(data)
        target.chmod(0o755)
    oracle = _oracle(server, profile)
    runners = {s.details.serial: s.runner for s in oracle._slots}
    assert runners["SAME"].ensure_binary() is False
    assert runners["OTHER"].ensure_binary() is True
    assert same.pushes == [] and other.pushes == [f"{REMOTE}/benchmark_model"]


def test_repetitions_give_one_sample_each(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    peer.add_phone("PIXEL-A")
    result = _oracle(server, replace(profile, repetitions=3)).measure(tiny_model, SETTINGS)
    assert len(result.samples_seconds) == 3 == len(_benchmarks(peer, "PIXEL-A"))
    assert [o.inference_avg_seconds for o in result.outputs] == list(result.samples_seconds)


def test_a_model_the_tool_rejects_fails_without_hurting_the_phone(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile
) -> None:
    peer.add_phone("PIXEL-A")
    oracle = _oracle(server, replace(profile, failure_threshold=1))
    with pytest.raises(BenchmarkFailed, match="Failed to mmap model"):
        oracle.measure(b"not a model", SETTINGS)
    assert [d.state for d in oracle.devices()] == ["ready"]
    assert _models_left(peer, "PIXEL-A") == []


def test_a_phone_dropping_out_mid_measurement(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    first = peer.add_phone("PIXEL-A")
    peer.add_phone("PIXEL-B")
    clock = FakeClock()
    oracle = _oracle(server, replace(profile, failure_threshold=1, reprobe_seconds=60.0), clock)
    first.drop_on = "benchmark_model --graph"  # vanishes once the run starts

    result = oracle.measure(tiny_model, SETTINGS)

    assert result.device == "PIXEL-B"  # the work moved to the other phone of the class
    assert len(_benchmarks(peer, "PIXEL-A")) == 1 and len(_benchmarks(peer, "PIXEL-B")) == 1
    states = {d.id: d.state for d in oracle.devices()}
    assert states == {"PIXEL-A": "unhealthy", "PIXEL-B": "ready"}
    (status_a, _) = oracle.phones()
    assert status_a.consecutive_failures == 1 and "PIXEL-A" in status_a.reason
    assert _models_left(peer, "PIXEL-B") == []

    # Back on the desk, but not probed before the interval has passed.
    first.drop_on = None
    first.online = True
    assert oracle.measure(tiny_model, SETTINGS).device == "PIXEL-B"
    assert oracle.probe_unhealthy() == []
    assert {d.id: d.state for d in oracle.devices()}["PIXEL-A"] == "unhealthy"

    clock.now += 60.0
    assert oracle.probe_unhealthy() == ["PIXEL-A"]
    assert {d.id: d.state for d in oracle.devices()} == {"PIXEL-A": "ready", "PIXEL-B": "ready"}
    assert oracle.measure(tiny_model, SETTINGS).device == "PIXEL-A"


def test_a_phone_still_gone_at_the_probe_stays_unhealthy(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    phone = peer.add_phone("PIXEL-A")
    clock = FakeClock()
    oracle = _oracle(server, replace(profile, failure_threshold=1, reprobe_seconds=60.0), clock)
    phone.drop_on = "benchmark_model --graph"
    with pytest.raises(NoPhoneAvailable, match="PIXEL-A"):
        oracle.measure(tiny_model, SETTINGS)
    with pytest.raises(NoPhoneAvailable, match="every phone is unhealthy"):
        oracle.measure(tiny_model, SETTINGS)
    clock.now += 60.0
    assert oracle.probe_unhealthy() == []  # still unplugged: probed, and not back
    (status,) = oracle.phones()
    assert status.state == "unhealthy" and status.reason.startswith("probe:")
    phone.online, phone.drop_on = True, None
    clock.now += 60.0
    assert oracle.measure(tiny_model, SETTINGS).device == "PIXEL-A"  # the caller re-probes


def test_failures_below_the_threshold_retry_on_another_phone(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    flaky = peer.add_phone("PIXEL-A")
    peer.add_phone("PIXEL-B")
    oracle = _oracle(server, replace(profile, failure_threshold=3))

    def cut_once(command: str) -> None:
        if "benchmark_model --graph" in command:
            flaky.on_shell = None
            peer.drop("PIXEL-A")
            flaky.online = True  # the connection broke, the phone stays listed

    flaky.on_shell = cut_once
    assert oracle.measure(tiny_model, SETTINGS).device == "PIXEL-B"
    (status_a, _) = oracle.phones()
    assert (status_a.state, status_a.consecutive_failures) == ("ready", 1)
    assert oracle.measure(tiny_model, SETTINGS).device == "PIXEL-A"
    assert oracle.phones()[0].consecutive_failures == 0


def test_a_hot_phone_is_waited_for_until_it_cools(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    phone = peer.add_phone("PIXEL-A", temperature_c=52.0)
    clock = FakeClock(on_sleep=lambda c: phone.set_temperature(52.0 - 4.0 * len(c.sleeps)))
    policy = with_thermal(profile, action="wait", poll_seconds=10.0, max_wait_seconds=300.0)
    result = _oracle(server, policy, clock).measure(tiny_model, SETTINGS)
    assert clock.sleeps == [10.0, 10.0]  # 52 -> 48 -> 44, under the 45 limit
    assert result.waited_seconds == 20.0
    assert result.flags == ()
    assert result.phone_state is not None and result.phone_state.temperature_c == 44.0


def test_a_hot_phone_is_flagged_under_the_flag_policy(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    peer.add_phone("PIXEL-A", temperature_c=52.0, usb_powered=False, thermal_status=2)
    clock = FakeClock()
    result = _oracle(server, with_thermal(profile, action="flag"), clock).measure(
        tiny_model, SETTINGS
    )
    assert clock.sleeps == []
    assert result.flags == ("hot", "throttling", "unpowered")
    assert len(result.samples_seconds) == 1


def test_one_run_per_phone_and_callers_wait_for_a_free_one(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile, tiny_model: bytes
) -> None:
    phone = peer.add_phone("PIXEL-A")
    oracle = _oracle(server, profile)
    entered, release = threading.Event(), threading.Event()
    active, most = [0], [0]
    lock = threading.Lock()

    def hold(command: str) -> None:
        if "benchmark_model --graph" not in command:
            return
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        entered.set()
        release.wait(timeout=30)
        with lock:
            active[0] -= 1

    phone.on_shell = hold
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(oracle.measure(tiny_model, SETTINGS).device))
        for _ in range(2)
    ]
    threads[0].start()
    assert entered.wait(timeout=30)
    assert [d.state for d in oracle.devices()] == ["busy"]
    threads[1].start()
    blocked = threading.Event()
    for _ in range(3000):  # until the second caller waits for the phone (bounded)
        if oracle.waiting == 1:
            blocked.set()
            break
        blocked.wait(0.01)
    assert blocked.is_set()
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert results == ["PIXEL-A", "PIXEL-A"]
    assert most[0] == 1
    assert oracle.waiting == 0


def test_the_factory_builds_one_oracle_per_device_class(
    peer: AdbPeer, tmp_path: Path, benchmark_binary: Path
) -> None:
    peer.add_phone("PIXEL-A", model="Pixel 1")
    peer.add_phone("PIXEL-B", model="Pixel 1")
    peer.add_phone("GALAXY", model="SM-G960F")
    peer.add_phone("STRANGER", model="Nokia 3310")
    farm = tmp_path / "farm.yaml"
    farm.write_text(
        f"adb: {{port: {peer.port}}}\n"
        "phones:\n"
        f"  - {{model: Pixel 1, cpu_mask: '1', benchmark_model: {benchmark_binary}}}\n"
        f"  - {{model: SM-G960F, device_class: galaxy-s9, cpu_mask: f0, threads: 4,"
        f" benchmark_model: {benchmark_binary}}}\n"
        f"  - {{model: Pixel 9, cpu_mask: '1', benchmark_model: {benchmark_binary}}}\n"
    )
    oracles = phone_oracles_from_file(farm)
    assert [o.device_class for o in oracles] == ["galaxy-s9", "pixel-1"]
    galaxy, pixel = oracles
    assert [d.id for d in pixel.devices()] == ["PIXEL-A", "PIXEL-B"]
    assert [(d.id, d.model) for d in galaxy.devices()] == [("GALAXY", "SM-G960F")]
    assert galaxy.default_settings == MeasureSettings(warmup_runs=5, runs=50, threads=4)


def test_the_factory_honours_serials(
    peer: AdbPeer, server: AdbServer, profile: PhoneProfile
) -> None:
    from services.latency.phones.profiles import AdbEndpoint, FarmConfig

    peer.add_phone("PIXEL-A")
    peer.add_phone("PIXEL-B")
    config = FarmConfig(
        adb=AdbEndpoint(port=peer.port), profiles=(replace(profile, serials=("PIXEL-B",)),)
    )
    (oracle,) = build_phone_oracles(config, server=server)
    assert [d.id for d in oracle.devices()] == ["PIXEL-B"]

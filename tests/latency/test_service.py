"""The latency service's core: validation, export, measurement and the result cache."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mnas.arch import Architecture, decode
from mnas.build import BuildParams
from services.latency.oracle import (
    HOST_CPU,
    DeviceInfo,
    HostOracle,
    LatencyOracle,
    LatencyResult,
    MeasureSettings,
)
from services.latency.service import LatencyService, Measurement

TINY = "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16 head:32"
OTHER = "stem:8 r1_k3_s22_e1_i8_o16_noskip head:32"
SMALL = BuildParams(resolution=32, num_classes=10, width=1.0)
QUICK = MeasureSettings(warmup_runs=1, runs=3, threads=1)


class CountingHostOracle(HostOracle):
    """The host oracle, counting the measurements it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        self.calls += 1
        return super().measure(model_bytes, settings)


class FakeOracle(LatencyOracle):
    """A device class with ``count`` devices that answers from the model's size, counting
    calls; ``gate`` (when given) holds every measurement until it is set."""

    def __init__(self, device_class: str = "fake", count: int = 1) -> None:
        self._class = device_class
        self._count = count
        self.calls = 0
        self.models: list[bytes] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    @property
    def device_class(self) -> str:
        return self._class

    def devices(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(id=f"{self._class}-{i}", device_class=self._class, model="Fake")
            for i in range(self._count)
        ]

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        with self._lock:
            self.calls += 1
            self.models.append(model_bytes)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with
        base = len(model_bytes) * 1e-6
        samples = tuple(base * (1 + i / 10) for i in range(settings.runs))
        return LatencyResult(samples_seconds=samples, device=f"{self._class}-0")


def fake_export(arch: Architecture, build: BuildParams) -> bytes:
    return f"{arch.canonical}|{build.resolution}|{build.num_classes}|{build.width}".encode()


@pytest.fixture
def fake() -> FakeOracle:
    return FakeOracle()


@pytest.fixture
def service(fake: FakeOracle) -> LatencyService:
    return LatencyService([fake], exporter=fake_export)


# --- the real thing: export and LiteRT ------------------------------------------------------


def test_measures_on_the_host_and_caches_the_identical_result() -> None:
    oracle = CountingHostOracle()
    service = LatencyService([oracle])
    first = service.measure(TINY, build=SMALL, settings=QUICK)
    assert not first.cached
    assert first.device_class == HOST_CPU
    assert first.architecture_id == decode(TINY).id
    assert len(first.result.samples_seconds) == QUICK.runs
    assert first.export_seconds > 0 and first.measure_seconds > 0
    second = service.measure(TINY, build=SMALL, settings=QUICK)
    assert second.cached
    assert second.result is first.result
    assert oracle.calls == 1
    third = service.measure(TINY, build=SMALL, settings=MeasureSettings(warmup_runs=1, runs=4))
    assert not third.cached
    assert len(third.result.samples_seconds) == 4
    assert oracle.calls == 2
    assert service.cache_entries == 2


# --- the cache ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "settings"),
    [
        (BuildParams(resolution=64, num_classes=10, width=1.0), QUICK),
        (BuildParams(resolution=32, num_classes=100, width=1.0), QUICK),
        (BuildParams(resolution=32, num_classes=10, width=0.5), QUICK),
        (SMALL, MeasureSettings(warmup_runs=2, runs=3, threads=1)),
        (SMALL, MeasureSettings(warmup_runs=1, runs=5, threads=1)),
        (SMALL, MeasureSettings(warmup_runs=1, runs=3, threads=2)),
    ],
)
def test_each_part_of_the_key_measures_anew(
    service: LatencyService,
    fake: FakeOracle,
    build: BuildParams,
    settings: MeasureSettings,
) -> None:
    service.measure(TINY, build=SMALL, settings=QUICK, device_class="fake")
    again = service.measure(TINY, build=build, settings=settings, device_class="fake")
    assert not again.cached
    assert fake.calls == 2
    assert service.measure(TINY, build=build, settings=settings, device_class="fake").cached
    assert fake.calls == 2


def test_different_architectures_and_device_classes_measure_anew() -> None:
    one, two = FakeOracle("one"), FakeOracle("two")
    service = LatencyService([one, two], exporter=fake_export)
    service.measure(TINY, build=SMALL, settings=QUICK, device_class="one")
    assert not service.measure(OTHER, build=SMALL, settings=QUICK, device_class="one").cached
    assert not service.measure(TINY, build=SMALL, settings=QUICK, device_class="two").cached
    assert (one.calls, two.calls) == (2, 1)


def test_the_key_is_the_architecture_id_not_its_spelling(
    service: LatencyService, fake: FakeOracle
) -> None:
    blocks = "r1_k3_s11_e1_i32_o16_noskip r1_k3_s22_e6_i16_o24"
    first = service.measure(blocks, build=SMALL, settings=QUICK, device_class="fake")
    spelled_out = decode(blocks).canonical
    assert spelled_out != blocks
    second = service.measure(spelled_out, build=SMALL, settings=QUICK, device_class="fake")
    assert second.cached and second.architecture_id == first.architecture_id
    third = service.measure(decode(blocks), build=SMALL, settings=QUICK, device_class="fake")
    assert third.cached
    assert fake.calls == 1


def test_least_recently_used_results_are_evicted(fake: FakeOracle) -> None:
    service = LatencyService([fake], exporter=fake_export, cache_size=2)
    a, b, c = (BuildParams(resolution=r, num_classes=10) for r in (32, 48, 64))

    def measure(build: BuildParams) -> bool:
        return service.measure(TINY, build=build, settings=QUICK, device_class="fake").cached

    assert [measure(a), measure(b), measure(a)] == [False, False, True]
    assert not measure(c)  # evicts b, the least recently used
    assert service.cache_entries == 2
    assert measure(a)
    assert not measure(b)
    assert fake.calls == 4


def test_concurrent_requests_for_one_key_measure_once(
    service: LatencyService, fake: FakeOracle
) -> None:
    fake.gate = threading.Event()

    def measure() -> Measurement:
        return service.measure(TINY, build=SMALL, settings=QUICK, device_class="fake")

    with ThreadPoolExecutor(max_workers=6) as pool:
        owner = pool.submit(measure)
        assert fake.entered.wait(timeout=30)
        assert service.in_flight == 1
        others = [pool.submit(measure) for _ in range(5)]
        fake.gate.set()
        first = owner.result(timeout=30)
        rest = [f.result(timeout=30) for f in others]
    assert fake.calls == 1
    assert not first.cached
    assert all(m.cached and m.result is first.result for m in rest)
    assert service.in_flight == 0


def test_a_failed_measurement_is_not_cached(service: LatencyService, fake: FakeOracle) -> None:
    fake.fail_with = RuntimeError("device unplugged")
    fake.gate = threading.Event()

    def measure() -> Measurement:
        return service.measure(TINY, build=SMALL, settings=QUICK, device_class="fake")

    with ThreadPoolExecutor(max_workers=2) as pool:
        owner = pool.submit(measure)
        assert fake.entered.wait(timeout=30)
        waiter = pool.submit(measure)
        fake.gate.set()
        with pytest.raises(RuntimeError, match="unplugged"):
            owner.result(timeout=30)
        with pytest.raises(RuntimeError, match="unplugged"):
            waiter.result(timeout=30)
    assert fake.calls == 1
    assert service.cache_entries == 0 and service.in_flight == 0
    fake.fail_with = None
    assert not service.measure(TINY, build=SMALL, settings=QUICK, device_class="fake").cached
    assert fake.calls == 2


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "kwargs", "field"),
    [
        ("", {}, "architecture.canonical"),
        ("   ", {}, "architecture.canonical"),
        ("r1_k3_s11", {}, "architecture.canonical"),
        ("stem:8 r1_k4_s11_e1_i8_o8", {}, "architecture.canonical"),
        ("stem:8 bogus:1 r1_k3_s11_e1_i8_o8", {}, "architecture.canonical"),
        (TINY, {"device_class": "pixel-1"}, "settings.device_class"),
        (TINY, {"build": BuildParams(resolution=1, num_classes=10)}, "build.resolution"),
        (TINY, {"build": BuildParams(resolution=10**6, num_classes=10)}, "build.resolution"),
        (TINY, {"build": BuildParams(resolution=32, num_classes=0)}, "build.num_classes"),
        (TINY, {"build": BuildParams(resolution=32, num_classes=10, width=0.0)}, "build.width"),
        (TINY, {"build": BuildParams(resolution=32, num_classes=10, width=-1)}, "build.width"),
        (
            TINY,
            {"build": BuildParams(resolution=32, num_classes=10, width=float("nan"))},
            "build.width",
        ),
        (
            TINY,
            {"build": BuildParams(resolution=32, num_classes=10, width=float("inf"))},
            "build.width",
        ),
        (TINY, {"settings": MeasureSettings(warmup_runs=-1)}, "settings.warmup_runs"),
        (TINY, {"settings": MeasureSettings(runs=0)}, "settings.runs"),
        (TINY, {"settings": MeasureSettings(threads=0)}, "settings.threads"),
    ],
)
def test_invalid_input_names_the_field(
    service: LatencyService,
    fake: FakeOracle,
    architecture: str,
    kwargs: dict[str, object],
    field: str,
) -> None:
    kwargs.setdefault("device_class", "fake")
    with pytest.raises(ValueError, match=f"^{re.escape(field)}:"):
        service.measure(architecture, **kwargs)  # type: ignore[arg-type]
    assert fake.calls == 0


def test_unknown_device_class_lists_the_known_ones(service: LatencyService) -> None:
    with pytest.raises(ValueError, match=r"'pixel-1' \(known: fake\)"):
        service.measure(TINY, device_class="pixel-1")


def test_oracles_must_be_given_once_each() -> None:
    with pytest.raises(ValueError, match="oracles"):
        LatencyService([])
    with pytest.raises(ValueError, match="given twice"):
        LatencyService([FakeOracle("a"), FakeOracle("a")])


# --- what the service offers --------------------------------------------------------------


def test_capacity_is_the_number_of_devices() -> None:
    service = LatencyService([FakeOracle("phone", count=3), HostOracle()], exporter=fake_export)
    assert service.capacity == 4
    assert service.in_flight == 0
    assert service.device_classes == [HOST_CPU, "phone"]
    assert [d.device_class for d in service.devices()] == [HOST_CPU] + ["phone"] * 3


def test_the_exporter_receives_the_build_parameters(
    service: LatencyService, fake: FakeOracle
) -> None:
    build = BuildParams(resolution=40, num_classes=7, width=0.75)
    service.measure(TINY, build=build, settings=QUICK, device_class="fake")
    assert fake.models == [fake_export(decode(TINY), build)]

"""The latency service's core: decode, export, measure, and cache the results.

A result is cached by architecture id, device class, build parameters and measure
settings in a bounded LRU; concurrent requests for one key run one measurement, the
others wait for it and get its result marked ``cached``. Exports for an oracle that runs
on this machine's CPU happen in that oracle's measurement slots, so an export never
overlaps a timing run there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from mnas.arch import Architecture, decode
from mnas.build import BuildParams
from mnas.errors import InvalidInput
from services.latency.keys import MeasurementKey
from services.latency.oracle import (
    HOST_CPU,
    DeviceInfo,
    LatencyOracle,
    LatencyResult,
    MeasureSettings,
)
from services.latency.predictor.adapter import PredictedLatency

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "Exporter",
    "LatencyService",
    "Measurement",
    "NotCalibrated",
    "export_flatbuffer",
    "preload_exporter",
]

_logger = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Measurement:
    """A measured (or cached) latency and what it took to get it.

    ``export_seconds`` and ``measure_seconds`` are those of the measurement that produced
    the result, also when ``cached`` is true.
    """

    architecture_id: str
    device_class: str
    result: LatencyResult
    export_seconds: float
    measure_seconds: float
    cached: bool = False


Exporter = Callable[[Architecture, BuildParams], bytes]


def export_flatbuffer(arch: Architecture, build: BuildParams) -> bytes:
    """The default exporter: :func:`services.latency.export.export_arch` (no TensorFlow)."""
    from services.latency.export import export_arch

    return export_arch(
        arch, num_classes=build.num_classes, resolution=build.resolution, width=build.width
    )


def preload_exporter() -> None:
    """Import the default exporter and LiteRT now instead of on the first Measure."""
    started = time.perf_counter()
    import ai_edge_litert.interpreter  # noqa: F401

    import services.latency.export  # noqa: F401

    _logger.info("loaded the exporter and LiteRT in %.1fs", time.perf_counter() - started)


class _Slots:
    """The oracle and a semaphore with one permit per device (taken around host exports)."""

    def __init__(self, oracle: LatencyOracle) -> None:
        self.oracle = oracle
        self.semaphore = threading.BoundedSemaphore(max(1, len(oracle.devices())))


class NotCalibrated(LookupError):
    """A predictor cannot price the architecture: a kernel it was not calibrated for."""


class LatencyService:
    """Measures architectures on the oracles' devices, caching results by key.

    ``predictors`` answer for device classes of their own (``host-cpu-predicted``...)
    from the architecture alone: no export, no device time.
    """

    def __init__(
        self,
        oracles: Sequence[LatencyOracle],
        *,
        exporter: Exporter | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        predictors: Sequence[PredictedLatency] = (),
    ) -> None:
        if not oracles:
            raise ValueError("oracles: a latency service needs at least one oracle")
        if cache_size < 1:
            raise ValueError(f"cache_size: must be >= 1, got {cache_size}")
        self._slots: dict[str, _Slots] = {}
        for oracle in oracles:
            if oracle.device_class in self._slots:
                raise ValueError(f"oracles: device class {oracle.device_class!r} given twice")
            self._slots[oracle.device_class] = _Slots(oracle)
        self._predictors: dict[str, PredictedLatency] = {}
        for predictor in predictors:
            if predictor.device_class in self._slots or predictor.device_class in self._predictors:
                raise ValueError(f"predictors: device class {predictor.device_class!r} given twice")
            self._predictors[predictor.device_class] = predictor
        self._export = exporter or export_flatbuffer
        self._cache_size = cache_size
        self._cache: OrderedDict[MeasurementKey, Measurement] = OrderedDict()
        self._pending: dict[MeasurementKey, Future[Measurement]] = {}
        self._lock = threading.Lock()
        self._in_flight = 0

    # --- what the service offers ------------------------------------------------------

    @property
    def device_classes(self) -> list[str]:
        return sorted([*self._slots, *self._predictors])

    @property
    def oracles(self) -> list[LatencyOracle]:
        """The oracles, by device class (not the predictors)."""
        return [self._slots[name].oracle for name in sorted(self._slots)]

    @property
    def predictors(self) -> list[PredictedLatency]:
        return [self._predictors[name] for name in sorted(self._predictors)]

    def devices(self) -> list[DeviceInfo]:
        """Every oracle's devices and every predictor, by device class."""
        devices: list[DeviceInfo] = []
        for name in self.device_classes:
            source = self._slots[name].oracle if name in self._slots else self._predictors[name]
            devices.extend(source.devices())
        return devices

    @property
    def capacity(self) -> int:
        """How many measurements run at once: the number of devices."""
        return sum(len(slots.oracle.devices()) for slots in self._slots.values())

    @property
    def in_flight(self) -> int:
        """Measurements running or waiting for a device now (not counting cache waiters)."""
        with self._lock:
            return self._in_flight

    @property
    def cache_entries(self) -> int:
        with self._lock:
            return len(self._cache)

    # --- measuring ----------------------------------------------------------------------

    def measure(
        self,
        architecture: str | Architecture,
        *,
        build: BuildParams | None = None,
        settings: MeasureSettings | None = None,
        device_class: str = HOST_CPU,
    ) -> Measurement:
        """The latency of ``architecture`` on ``device_class``; from the cache when known.

        Raises :class:`~mnas.errors.InvalidInput` naming the field for bad input
        (``architecture.canonical``, ``build.*``, ``settings.*``, ``settings.device_class``);
        anything else a measurement raises is the oracle's or exporter's failure.
        """
        build = build or BuildParams()
        settings = settings or MeasureSettings()
        slots = self._slots.get(device_class)
        try:
            arch = _decode(architecture)
            if slots is None and device_class not in self._predictors:
                known = ", ".join(self.device_classes)
                raise ValueError(
                    f"settings.device_class: unknown device class {device_class!r} (known: {known})"
                )
            build.validate()
            settings.validate()
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        key = MeasurementKey.of(arch.id, device_class, build, settings)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return replace(hit, cached=True)
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = Future()
                self._pending[key] = pending
                self._in_flight += 1
        if not owner:
            return replace(pending.result(), cached=True)
        try:
            if slots is None:
                measurement = self._predict(self._predictors[device_class], arch, build)
            else:
                measurement = self._run(slots, arch, build, settings)
        except BaseException as err:
            with self._lock:
                del self._pending[key]
                self._in_flight -= 1
            pending.set_exception(err)
            raise
        with self._lock:
            self._cache[key] = measurement
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            del self._pending[key]
            self._in_flight -= 1
        pending.set_result(measurement)
        return measurement

    def _run(
        self,
        slots: _Slots,
        arch: Architecture,
        build: BuildParams,
        settings: MeasureSettings,
    ) -> Measurement:
        oracle = slots.oracle
        if oracle.runs_on_host:
            with slots.semaphore:
                model, export_seconds = self._timed_export(arch, build)
                result, measure_seconds = _timed_measure(oracle, model, settings)
        else:
            model, export_seconds = self._timed_export(arch, build)
            result, measure_seconds = _timed_measure(oracle, model, settings)
        _logger.info(
            "measured %s on %s (%s): median %.3f ms, export %.2fs, measure %.2fs",
            arch.id,
            oracle.device_class,
            result.device,
            result.median * 1e3,
            export_seconds,
            measure_seconds,
        )
        return Measurement(
            architecture_id=arch.id,
            device_class=oracle.device_class,
            result=result,
            export_seconds=export_seconds,
            measure_seconds=measure_seconds,
        )

    def _predict(
        self, predictor: PredictedLatency, arch: Architecture, build: BuildParams
    ) -> Measurement:
        started = time.perf_counter()
        try:
            result = predictor.measure(
                arch, resolution=build.resolution, width=build.width, num_classes=build.num_classes
            )
        except KeyError as err:  # a kernel the predictor was not calibrated for
            raise NotCalibrated(f"{predictor.device_class}: {err.args[0]}") from None
        return Measurement(
            architecture_id=arch.id,
            device_class=predictor.device_class,
            result=result,
            export_seconds=0.0,
            measure_seconds=time.perf_counter() - started,
        )

    def _timed_export(self, arch: Architecture, build: BuildParams) -> tuple[bytes, float]:
        started = time.perf_counter()
        model = self._export(arch, build)
        return model, time.perf_counter() - started


def _timed_measure(
    oracle: LatencyOracle, model: bytes, settings: MeasureSettings
) -> tuple[LatencyResult, float]:
    started = time.perf_counter()
    result = oracle.measure(model, settings)
    return result, time.perf_counter() - started


def _decode(architecture: str | Architecture) -> Architecture:
    if isinstance(architecture, Architecture):
        return architecture
    if not isinstance(architecture, str) or not architecture.strip():
        raise ValueError("architecture.canonical: empty")
    try:
        return decode(architecture)
    except ValueError as err:
        raise ValueError(f"architecture.canonical: {err}") from None

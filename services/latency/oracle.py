"""Latency oracles: what runs a ``.tflite`` model on a device and times it.

An oracle serves one device class (``host-cpu``, a phone model, a predictor) and one or
more devices of it. :class:`HostOracle` runs the LiteRT interpreter on this machine's CPU.

Statistics of a measurement: ``median`` is the usual one (the mean of the two middle
samples for an even count); ``p90`` is the nearest-rank percentile, the smallest sample
that at least 90% of the samples do not exceed, so it is always one of the samples.
"""

from __future__ import annotations

import abc
import logging
import math
import platform
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnas.validation import check_int

__all__ = [
    "HOST_CPU",
    "DeviceInfo",
    "HostOracle",
    "LatencyOracle",
    "LatencyResult",
    "MeasureSettings",
    "host_cpu_model",
    "nearest_rank",
]

_logger = logging.getLogger(__name__)

HOST_CPU = "host-cpu"

# Upper bounds that keep one request from occupying a device for hours.
MAX_RUNS = 10_000
MAX_THREADS = 64


@dataclass(frozen=True)
class MeasureSettings:
    """How to time a model: untimed warm-up invocations, timed runs, interpreter threads."""

    warmup_runs: int = 5
    runs: int = 20
    threads: int = 1

    def validate(self, prefix: str = "settings") -> None:
        """Raise ``ValueError`` naming the first bad field (``settings.runs``, ...)."""
        check_int(f"{prefix}.warmup_runs", self.warmup_runs, 0, MAX_RUNS)
        check_int(f"{prefix}.runs", self.runs, 1, MAX_RUNS)
        check_int(f"{prefix}.threads", self.threads, 1, MAX_THREADS)


@dataclass(frozen=True)
class DeviceInfo:
    """One device an oracle measures on; ``state`` is ready, busy or unhealthy."""

    id: str
    device_class: str
    model: str
    state: str = "ready"


@dataclass(frozen=True)
class LatencyResult:
    """The timed runs of one measurement, in seconds, and the device that ran them."""

    samples_seconds: tuple[float, ...]
    device: str

    def __post_init__(self) -> None:
        if not self.samples_seconds:
            raise ValueError("samples_seconds: a result needs at least one sample")

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples_seconds))

    @property
    def min(self) -> float:
        return min(self.samples_seconds)

    @property
    def p90(self) -> float:
        return nearest_rank(self.samples_seconds, 0.9)

    @property
    def mean(self) -> float:
        return math.fsum(self.samples_seconds) / len(self.samples_seconds)


def nearest_rank(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the ``ceil(fraction * n)``-th smallest sample."""
    if not samples:
        raise ValueError("samples: need at least one sample")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))  # guard 0.9 * 10 = 9.000...01
    return ordered[rank - 1]


class LatencyOracle(abc.ABC):
    """Measures flatbuffers on the devices of one device class.

    ``measure`` may be called from many threads; an implementation runs at most one
    measurement per device at a time and blocks the others until a device is free.
    """

    @property
    @abc.abstractmethod
    def device_class(self) -> str:
        """The device class this oracle serves, e.g. ``host-cpu``."""

    @abc.abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """The devices this oracle measures on, with their current state."""

    @abc.abstractmethod
    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        """Time ``settings.runs`` invocations of the model after ``settings.warmup_runs``."""

    @property
    def runs_on_host(self) -> bool:
        """Whether measurements use this machine's CPU (so exports would disturb them)."""
        return False


class HostOracle(LatencyOracle):
    """This machine's CPU through the LiteRT interpreter; one measurement at a time."""

    def __init__(self, *, model: str | None = None, seed: int = 0) -> None:
        self._model = model or host_cpu_model()
        self._seed = seed
        self._lock = threading.Lock()

    @property
    def device_class(self) -> str:
        return HOST_CPU

    @property
    def runs_on_host(self) -> bool:
        return True

    def devices(self) -> list[DeviceInfo]:
        state = "busy" if self._lock.locked() else "ready"
        return [DeviceInfo(id=self._model, device_class=HOST_CPU, model=self._model, state=state)]

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        settings.validate()
        # Imported here so that a server starts without loading LiteRT.
        from ai_edge_litert.interpreter import Interpreter

        with self._lock:
            interpreter = Interpreter(model_content=model_bytes, num_threads=settings.threads)
            interpreter.allocate_tensors()
            rng = np.random.default_rng(self._seed)
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(
                    detail["index"], _fixed_input(rng, tuple(detail["shape"]), detail["dtype"])
                )
            invoke = interpreter.invoke
            for _ in range(settings.warmup_runs):
                invoke()
            samples = []
            for _ in range(settings.runs):
                started = time.perf_counter()
                invoke()
                samples.append(time.perf_counter() - started)
        result = LatencyResult(samples_seconds=tuple(samples), device=self._model)
        _logger.debug(
            "measured %d bytes: median %.6fs over %d runs",
            len(model_bytes),
            result.median,
            settings.runs,
        )
        return result


def host_cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where readable, else ``platform``'s."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def _fixed_input(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Random data of the input's shape and type, the same for every run of one seed."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return rng.standard_normal(shape).astype(kind)
    if kind.kind in "iu":
        info = np.iinfo(kind.type)  # type: ignore[type-var]
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=kind)
    if kind.kind == "b":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(kind)
    raise ValueError(f"model input: unsupported dtype {kind}")

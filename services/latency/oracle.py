"""Latency oracles: what runs a ``.tflite`` model on a device and times it.

An oracle serves one device class (``host-cpu``, a phone model, a predictor) and one or
more devices of it. :class:`HostOracle` runs the LiteRT interpreter on this machine's CPU.

Statistics of a measurement: ``median`` is the usual one (the mean of the two middle
samples for an even count); ``p90`` is the nearest-rank percentile, the smallest sample
that at least 90% of the samples do not exceed, so it is always one of the samples.

``robust`` is the figure to compare architectures by: the mean of the fastest tenth of
the samples (:func:`fastest_mean`). Interference from other work on a device (another
process on the core, an interrupt, a migration) only ever adds time to a run, so the
fastest runs estimate the undisturbed cost; averaging a few of them instead of taking
the single minimum smooths the timer's and the cache's jitter. A slowdown of the whole
machine that lasts longer than the measurement (on a shared 2-core VM: +8% for seconds
at a time) shifts even the fastest runs; a :class:`HostOracle` with a ``reference``
model times it after every run and reports the median ratio of each pair scaled to the
reference's baseline, which cancels such slowdowns. Coefficients of variation over ten
calls there (``benchmarks/latency_repeatability.py``): median of 20 runs 2-4%, robust
figure of 50 runs 0.3-4%, with the reference 1.0-1.4%.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnas.defaults import DEFAULT_RUNS, DEFAULT_THREADS, DEFAULT_WARMUP_RUNS
from mnas.validation import check_int

__all__ = [
    "HOST_CPU",
    "ROBUST_FRACTION",
    "DeviceInfo",
    "HostOracle",
    "LatencyOracle",
    "LatencyResult",
    "MeasureSettings",
    "fastest_mean",
    "host_cpu_model",
    "nearest_rank",
]

_logger = logging.getLogger(__name__)

HOST_CPU = "host-cpu"

# Upper bounds that keep one request from occupying a device for hours.
MAX_RUNS = 10_000
MAX_THREADS = 64

# The share of the fastest samples that ``LatencyResult.robust`` averages.
ROBUST_FRACTION = 0.1


@dataclass(frozen=True)
class MeasureSettings:
    """How to time a model: untimed warm-up invocations, timed runs, interpreter threads.

    50 runs give ``LatencyResult.robust`` five samples to average; at 1-5 ms a model that
    is 0.05-0.25 s of timed runs.
    """

    warmup_runs: int = DEFAULT_WARMUP_RUNS
    runs: int = DEFAULT_RUNS
    threads: int = DEFAULT_THREADS

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
    """The timed runs of one measurement, in seconds, and the device that ran them.

    ``reference_seconds``, where given, are runs of a fixed reference model, each timed
    right after the run of ``samples_seconds`` at the same index, and
    ``reference_baseline_seconds`` that model's robust figure on the quiet device.
    """

    samples_seconds: tuple[float, ...]
    device: str
    reference_seconds: tuple[float, ...] = ()
    reference_baseline_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.samples_seconds:
            raise ValueError("samples_seconds: a result needs at least one sample")
        if self.reference_seconds:
            if len(self.reference_seconds) != len(self.samples_seconds):
                raise ValueError(
                    f"reference_seconds: {len(self.reference_seconds)} runs for "
                    f"{len(self.samples_seconds)} samples; they come in pairs"
                )
            if not self.reference_baseline_seconds > 0:
                raise ValueError("reference_baseline_seconds: must be positive with references")

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

    @property
    def robust(self) -> float:
        """The figure to report: the mean of the fastest tenth of the samples (at least one).

        Repeatable where the median is not: noise from other work only adds time. With
        reference runs: the median ratio of each sample to its reference run, times the
        reference's baseline, which also cancels slowdowns of the whole device that
        last the whole measurement (both runs of a pair see the same clock and load).
        """
        if self.reference_seconds:
            ratios = [
                t / r for t, r in zip(self.samples_seconds, self.reference_seconds, strict=True)
            ]
            return self.reference_baseline_seconds * float(statistics.median(ratios))
        return fastest_mean(self.samples_seconds, ROBUST_FRACTION)


def fastest_mean(samples: Sequence[float], fraction: float) -> float:
    """The mean of the ``ceil(fraction * n)`` smallest samples (at least one)."""
    if len(samples) == 0:
        raise ValueError("samples: need at least one sample")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: must be in (0, 1], got {fraction}")
    count = max(1, math.ceil(fraction * len(samples) - 1e-9))
    return math.fsum(sorted(samples)[:count]) / count


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
    """This machine's CPU through the LiteRT interpreter; one measurement at a time.

    ``cpu``: pin the measuring thread to that CPU while it measures (Linux), so the
    scheduler cannot migrate it between runs; ``None`` leaves placement to the scheduler.

    ``reference``: a small fixed model (a flatbuffer) timed after every run, so that the
    result's robust figure is normalized by the machine's speed at that moment (see
    :attr:`LatencyResult.robust`). Its baseline is ``reference_baseline`` seconds where
    given (to keep figures comparable across restarts), else the fastest tenth of
    ``baseline_runs`` runs of it alone, timed once per thread count at first use: a
    machine slowed down then shifts every figure of this oracle alike.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        seed: int = 0,
        cpu: int | None = None,
        reference: bytes | None = None,
        reference_baseline: float | None = None,
        baseline_runs: int = 500,
    ) -> None:
        if cpu is not None:
            check_int("cpu", cpu, 0)
            if not hasattr(os, "sched_setaffinity"):
                raise ValueError("cpu: pinning needs os.sched_setaffinity (Linux)")
        check_int("baseline_runs", baseline_runs, 1, MAX_RUNS)
        if reference_baseline is not None and not (
            math.isfinite(reference_baseline) and reference_baseline > 0
        ):
            raise ValueError(f"reference_baseline: must be positive, got {reference_baseline}")
        self._fixed_baseline = reference_baseline
        self._model = model or host_cpu_model()
        self._seed = seed
        self._cpu = cpu
        self._reference = reference
        self._baseline_runs = baseline_runs
        self._baselines: dict[int, float] = {}
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
        with self._lock, _pinned(self._cpu):
            invoke = self._prepared(model_bytes, settings.threads)
            if self._reference is None:
                for _ in range(settings.warmup_runs):
                    invoke()
                samples = _timed(invoke, settings.runs)
                return self._result(model_bytes, settings, samples)
            reference = self._prepared(self._reference, settings.threads)
            baseline = self._fixed_baseline or self._baselines.get(settings.threads)
            if baseline is None:
                for _ in range(settings.warmup_runs):
                    reference()
                baseline = fastest_mean(_timed(reference, self._baseline_runs), ROBUST_FRACTION)
                self._baselines[settings.threads] = baseline
                _logger.info("reference baseline: %.6fs", baseline)
            for _ in range(settings.warmup_runs):
                invoke()
                reference()
            samples, references = [], []
            for _ in range(settings.runs):
                samples += _timed(invoke, 1)
                references += _timed(reference, 1)
        return self._result(model_bytes, settings, samples, references, baseline)

    def _prepared(self, model_bytes: bytes, threads: int) -> Callable[[], None]:
        """An interpreter for the model with its inputs set; its ``invoke``."""
        # Imported here so that a server starts without loading LiteRT.
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=model_bytes, num_threads=threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(self._seed)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(
                detail["index"], _fixed_input(rng, tuple(detail["shape"]), detail["dtype"])
            )
        invoke: Callable[[], None] = interpreter.invoke
        return invoke

    def _result(
        self,
        model_bytes: bytes,
        settings: MeasureSettings,
        samples: list[float],
        references: Sequence[float] = (),
        baseline: float = 0.0,
    ) -> LatencyResult:
        result = LatencyResult(
            samples_seconds=tuple(samples),
            device=self._model,
            reference_seconds=tuple(references),
            reference_baseline_seconds=baseline,
        )
        _logger.debug(
            "measured %d bytes: robust %.6fs, median %.6fs over %d runs",
            len(model_bytes),
            result.robust,
            result.median,
            settings.runs,
        )
        return result


def _timed(invoke: Callable[[], None], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        invoke()
        samples.append(time.perf_counter() - started)
    return samples


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Run the calling thread on ``cpu`` only, restoring its CPU set afterwards."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


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

"""Calibration: measure kernels and whole networks on an oracle, fit the correction.

``calibrate`` measures every kernel of the calibration architectures (and, given a
search space, every kernel of the space: the lookup-table approach, a few thousand tiny
probes), then the calibration architectures whole, and fits the correction by ridge
regression of ``measured - kernel sum`` on the features. ``recalibrate`` repeats what a
predictor file records (after a runtime or OS update, on another unit of the device class).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

import numpy as np

from mnas.arch import Architecture, decode
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.space import SearchSpace
from services.latency.oracle import HOST_CPU, LatencyOracle, MeasureSettings, host_cpu_model
from services.latency.predictor.kernels import Kernel, network_kernels, space_kernels
from services.latency.predictor.model import FEATURES, Correction, LatencyPredictor, features
from services.latency.predictor.probes import Probe, probes

__all__ = [
    "DEFAULT_RIDGE",
    "Export",
    "KernelMeasurer",
    "calibrate",
    "default_export",
    "fit_correction",
    "host_build",
    "recalibrate",
]

_logger = logging.getLogger(__name__)

DEFAULT_RIDGE = 1e-3

# (architecture, resolution, width, num_classes) -> .tflite flatbuffer
Export = Callable[[Architecture, int, float, int], bytes]

# What one measurement builds: (architecture, resolution, width, num_classes).
_Job = tuple[Architecture, int, float, int]


def _probe_job(probe: Probe) -> _Job:
    return (probe.arch, probe.resolution, 1.0, probe.num_classes)


def default_export(arch: Architecture, resolution: int, width: float, num_classes: int) -> bytes:
    """:func:`services.latency.export.export_arch` (imported on first use: TensorFlow)."""
    from services.latency.export import export_arch

    return export_arch(arch, num_classes=num_classes, resolution=resolution, width=width)


def host_build() -> str:
    """This host's build identity: LiteRT version, CPU model, Python platform."""
    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert = "unknown"
    return f"ai-edge-litert {litert}; {host_cpu_model()}; {platform.machine()}"


class KernelMeasurer:
    """Times kernels on a live oracle by the difference of their probes.

    Probes shared by many kernels (baselines) are measured once per measurer. Also
    usable as a predictor's ``measure_unseen``.
    """

    def __init__(
        self,
        oracle: LatencyOracle,
        settings: MeasureSettings | None = None,
        export: Export = default_export,
    ) -> None:
        self.oracle = oracle
        self.settings = settings or MeasureSettings()
        self.export = export
        self._probes: dict[Probe, float] = {}
        self.measurements = 0

    def seconds(self, arch: Architecture, resolution: int, width: float, num_classes: int) -> float:
        """One network's robust latency on the oracle."""
        model = self.export(arch, resolution, width, num_classes)
        self.measurements += 1
        return self.oracle.measure(model, self.settings).robust

    def probe_seconds(self, probe: Probe) -> float:
        seconds = self._probes.get(probe)
        if seconds is None:
            seconds = self.seconds(probe.arch, probe.resolution, 1.0, probe.num_classes)
            self._probes[probe] = seconds
        return seconds

    def __call__(self, kernel: Kernel) -> float:
        """The kernel's latency: its probe minus the probe without it, never below zero."""
        with_kernel, without = probes(kernel)
        seconds = self.seconds(
            with_kernel.arch, with_kernel.resolution, 1.0, with_kernel.num_classes
        )
        if without is not None:
            seconds -= self.probe_seconds(without)
        return max(0.0, seconds)


def fit_correction(
    predictor: LatencyPredictor,
    archs: Sequence[Architecture],
    measured: Sequence[float],
    *,
    resolution: int,
    width: float,
    num_classes: int,
    ridge: float = DEFAULT_RIDGE,
) -> Correction:
    """Ridge regression of ``measured - kernel sum`` on :data:`FEATURES` (standardized)."""
    if len(archs) != len(measured) or not archs:
        raise ValueError("fit_correction: needs one measurement per architecture, at least one")
    rows, residuals = [], []
    for arch, seconds in zip(archs, measured, strict=True):
        net = predictor.network(arch, resolution=resolution, width=width, num_classes=num_classes)
        total = predictor.kernel_sum(net)
        values = features(total, net)
        rows.append([values[name] for name in FEATURES])
        residuals.append(seconds - total)
    x = np.array(rows, dtype=float)
    y = np.array(residuals, dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    y_mean = float(y.mean())
    # Ridge on standardized features; the intercept (mean residual) is not penalized.
    gram = z.T @ z + ridge * len(y) * np.eye(len(FEATURES))
    beta = np.linalg.lstsq(gram, z.T @ (y - y_mean), rcond=None)[0]  # collinear: min-norm
    coefficients = beta / scale
    intercept = y_mean - float(coefficients @ mean)
    return Correction(
        intercept, {name: float(c) for name, c in zip(FEATURES, coefficients, strict=True)}
    )


def calibrate(
    oracle: LatencyOracle,
    archs: Iterable[Architecture],
    *,
    resolution: int = DEFAULT_RESOLUTION,
    width: float = DEFAULT_WIDTH,
    num_classes: int = DEFAULT_NUM_CLASSES,
    settings: MeasureSettings | None = None,
    space: SearchSpace | None = None,
    build: str | None = None,
    export: Export = default_export,
    ridge: float = DEFAULT_RIDGE,
    passes: int = 1,
) -> LatencyPredictor:
    """A predictor for ``oracle``'s device class, calibrated on ``archs`` (and ``space``).

    ``build`` identifies the runtime the oracle measures with; required except for the
    host CPU, whose identity is :func:`host_build`. ``space`` must use the same
    resolution, width and class count. ``passes``: measure every probe and network that
    many times, one pass over all of them after the other, and keep each one's fastest
    figure, so that a burst of load on the device spoils no figure for good.
    """
    archs = list(archs)
    if not archs:
        raise ValueError("calibrate: needs at least one architecture to fit the correction")
    if build is None:
        if oracle.device_class != HOST_CPU:
            raise ValueError(f"build: required for device class {oracle.device_class!r}")
        build = host_build()
    if space is not None and (space.resolution, space.width, space.num_classes) != (
        resolution,
        width,
        num_classes,
    ):
        raise ValueError("space: its resolution, width and num_classes must match calibrate's")
    if passes < 1:
        raise ValueError(f"passes: must be >= 1, got {passes}")
    measurer = KernelMeasurer(oracle, settings, export)
    started = time.perf_counter()
    sizes = (resolution, float(width), num_classes)
    wanted: set[Kernel] = set()
    for arch in archs:
        net = network_kernels(arch, resolution=resolution, width=width, num_classes=num_classes)
        wanted.update(net.kernels)
    if space is not None:
        wanted |= space_kernels(space)
    kernels = sorted(wanted, key=repr)
    pairs = {kernel: probes(kernel) for kernel in kernels}
    jobs: dict[_Job, None] = {}  # ordered set: every probe and network, measured per pass
    for with_kernel, without in pairs.values():
        jobs[_probe_job(with_kernel)] = None
        if without is not None:
            jobs[_probe_job(without)] = None
    for arch in archs:
        jobs[(arch, *sizes)] = None
    times: dict[_Job, float] = {}
    for done in range(passes):
        for i, job in enumerate(jobs):
            seconds = measurer.seconds(*job)
            times[job] = min(seconds, times.get(job, seconds))
            if (i + 1) % 500 == 0:
                _logger.info("pass %d: measured %d/%d networks", done + 1, i + 1, len(jobs))
    table: dict[Kernel, float] = {}
    for kernel, (with_kernel, without) in pairs.items():
        seconds = times[_probe_job(with_kernel)]
        if without is not None:
            seconds -= times[_probe_job(without)]
        table[kernel] = max(0.0, seconds)
    predictor = LatencyPredictor(
        device_class=oracle.device_class, build=build, kernels=table, correction=Correction()
    )
    measured = [times[(arch, *sizes)] for arch in archs]
    correction = fit_correction(
        predictor, archs, measured, resolution=resolution, width=width,
        num_classes=num_classes, ridge=ridge,
    )  # fmt: skip
    s = settings or MeasureSettings()
    calibration = {
        "architectures": [a.canonical for a in archs],
        "resolution": resolution,
        "width": width,
        "num_classes": num_classes,
        "space": space is not None,
        "settings": {"warmup_runs": s.warmup_runs, "runs": s.runs, "threads": s.threads},
        "statistic": "robust",
        "ridge": ridge,
        "passes": passes,
        "seconds": round(time.perf_counter() - started, 3),
        "measurements": measurer.measurements,
    }
    _logger.info(
        "calibrated %s: %d kernels, %d networks, %d measurements in %.0fs",
        oracle.device_class,
        len(table),
        len(archs),
        measurer.measurements,
        calibration["seconds"],
    )
    return LatencyPredictor(
        device_class=oracle.device_class,
        build=build,
        kernels=table,
        correction=correction,
        calibration=calibration,
    )


def recalibrate(
    predictor: LatencyPredictor,
    oracle: LatencyOracle,
    *,
    build: str | None = None,
    export: Export = default_export,
    space: SearchSpace | None = None,
) -> LatencyPredictor:
    """Repeat ``predictor``'s recorded calibration on ``oracle`` (a fresh table and fit).

    A file records only whether a space's table was measured: ``space`` names it; by
    default it is the default :class:`~mnas.space.SearchSpace` at the recorded sizes.
    """
    if oracle.device_class != predictor.device_class:
        raise ValueError(
            f"oracle: device class {oracle.device_class!r}, the predictor's is "
            f"{predictor.device_class!r}"
        )
    recorded = predictor.calibration
    try:
        archs = [decode(text) for text in recorded["architectures"]]
        resolution, width = int(recorded["resolution"]), float(recorded["width"])
        num_classes = int(recorded["num_classes"])
        settings = MeasureSettings(**recorded["settings"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"predictor: no usable calibration record ({err!r})") from None
    if space is None and recorded.get("space"):
        space = SearchSpace(resolution=resolution, width=width, num_classes=num_classes)
    return calibrate(
        oracle, archs, resolution=resolution, width=width, num_classes=num_classes,
        settings=settings, space=space, build=build, export=export,
        ridge=float(recorded.get("ridge", DEFAULT_RIDGE)),
        passes=int(recorded.get("passes", 1)),
    )  # fmt: skip

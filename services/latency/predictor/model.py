"""The calibrated latency predictor: a kernel table, a correction, and their file format.

``predict`` = the sum of the network's kernels + the correction, a linear function of
the network's features (the kernel sum itself, multiply-adds, layer count) fitted on
whole-network measurements: what a sum of isolated kernels misses (fixed invocation
cost, caches warm across layers, the probes' own stems and heads).

A kernel missing from the table is measured on the spot when the predictor has a
``measure_unseen`` callable (a live oracle, see :class:`~.calibrate.KernelMeasurer`) and
stored; otherwise a layer's is estimated from the measured ones
(:mod:`~services.latency.predictor.interpolate`).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnas.arch import Architecture
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from services.latency.predictor.interpolate import KernelInterpolator
from services.latency.predictor.kernels import (
    Kernel,
    LayerKernel,
    NetworkKernels,
    kernel_from_json,
    kernel_to_json,
    network_kernels,
)

__all__ = [
    "FEATURES",
    "FILE_FORMAT",
    "FORMAT_VERSION",
    "Correction",
    "LatencyPredictor",
    "PredictorFileError",
    "features",
]

_logger = logging.getLogger(__name__)

FILE_FORMAT = "mnas-latency-predictor"
FORMAT_VERSION = 1
FEATURES = ("kernel_sum_seconds", "macs", "layers")


class PredictorFileError(ValueError):
    """A predictor file that cannot be used here: unreadable, another format or device."""


@dataclass(frozen=True)
class Correction:
    """``intercept + sum(coefficients[f] * feature f)``, in seconds, over :data:`FEATURES`."""

    intercept_seconds: float = 0.0
    coefficients: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.coefficients) - set(FEATURES)
        if unknown:
            raise ValueError(
                f"correction: unknown features {sorted(unknown)} (known: {', '.join(FEATURES)})"
            )

    def __call__(self, values: Mapping[str, float]) -> float:
        return self.intercept_seconds + math.fsum(
            c * values[name] for name, c in self.coefficients.items()
        )


def features(kernel_sum: float, net: NetworkKernels) -> dict[str, float]:
    """The correction's inputs for one network."""
    return {"kernel_sum_seconds": kernel_sum, "macs": float(net.macs), "layers": float(net.layers)}


MeasureKernel = Callable[[Kernel], float]


class LatencyPredictor:
    """Predicts a network's latency on one device class from its kernels; no device needed.

    ``build`` identifies what the kernels were measured with (runtime version and CPU
    model, or phone build); ``calibration`` records how (architectures, sizes, settings)
    so that :func:`~.calibrate.recalibrate` can repeat it.
    """

    def __init__(
        self,
        *,
        device_class: str,
        build: str,
        kernels: Mapping[Kernel, float],
        correction: Correction,
        created: str | None = None,
        calibration: Mapping[str, Any] | None = None,
        measure_unseen: MeasureKernel | None = None,
    ) -> None:
        self.device_class = device_class
        self.build = build
        self.correction = correction
        self.created = created or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.calibration: dict[str, Any] = dict(calibration or {})
        self.measure_unseen = measure_unseen
        self._kernels: dict[Kernel, float] = dict(kernels)
        self._lock = threading.Lock()
        self._interpolator: KernelInterpolator | None = None
        self._networks: dict[tuple[Architecture, int, float, int], NetworkKernels] = {}

    # --- the table -------------------------------------------------------------------

    @property
    def kernels(self) -> dict[Kernel, float]:
        """A copy of the kernel table (seconds per kernel)."""
        with self._lock:
            return dict(self._kernels)

    def kernel_seconds(self, kernel: Kernel) -> float:
        """The table's figure for ``kernel``; unseen: measured (and stored) or interpolated."""
        seconds = self._kernels.get(kernel)
        if seconds is not None:
            return seconds
        if self.measure_unseen is not None:
            seconds = self.measure_unseen(kernel)
            with self._lock:
                self._kernels[kernel] = seconds
                self._interpolator = None
            _logger.info("measured unseen kernel %s: %.1f us", kernel, seconds * 1e6)
            return seconds
        return self._interpolate(kernel)

    def _interpolate(self, kernel: Kernel) -> float:
        if not isinstance(kernel, LayerKernel):
            raise KeyError(
                f"kernel {kernel} was not calibrated and only layers interpolate; "
                "recalibrate with an architecture of these sizes or give measure_unseen"
            )
        interpolator = self._interpolator
        if interpolator is None:
            interpolator = self._interpolator = KernelInterpolator(self.kernels)  # a copy
        return interpolator(kernel)

    # --- predicting ------------------------------------------------------------------

    def network(
        self, arch: Architecture, *, resolution: int, width: float, num_classes: int
    ) -> NetworkKernels:
        """``arch``'s kernels and features at these sizes (cached)."""
        key = (arch, resolution, float(width), num_classes)
        net = self._networks.get(key)
        if net is None:
            net = network_kernels(arch, resolution=resolution, width=width, num_classes=num_classes)
            if len(self._networks) >= 65536:
                self._networks.clear()
            self._networks[key] = net
        return net

    def kernel_sum(self, net: NetworkKernels) -> float:
        return math.fsum(self.kernel_seconds(k) for k in net.kernels)

    def predict(
        self,
        arch: Architecture,
        *,
        resolution: int = DEFAULT_RESOLUTION,
        width: float = DEFAULT_WIDTH,
        num_classes: int = DEFAULT_NUM_CLASSES,
    ) -> float:
        """Predicted seconds per inference of ``arch`` at these sizes (batch 1)."""
        net = self.network(arch, resolution=resolution, width=width, num_classes=num_classes)
        total = self.kernel_sum(net)
        return total + self.correction(features(total, net))

    # --- the file --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            table = sorted(self._kernels.items(), key=lambda kv: json.dumps(kernel_to_json(kv[0])))
        return {
            "format": FILE_FORMAT,
            "format_version": FORMAT_VERSION,
            "device_class": self.device_class,
            "build": self.build,
            "created": self.created,
            "calibration": self.calibration,
            "correction": {
                "intercept_seconds": self.correction.intercept_seconds,
                "coefficients": dict(self.correction.coefficients),
            },
            "kernels": [{"kernel": kernel_to_json(k), "seconds": s} for k, s in table],
        }

    def save(self, path: str | Path) -> None:
        """Write the predictor as JSON (atomically: a temporary file, then a rename)."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        partial.replace(path)

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, device_class: str, build: str | None = None,
        where: str = "predictor",
    ) -> LatencyPredictor:  # fmt: skip
        """Check the header, then read; :class:`PredictorFileError` says what does not fit.

        ``build``: refuse a table measured with another build (``None``: accept any).
        """
        if data.get("format") != FILE_FORMAT:
            raise PredictorFileError(f"{where}: not a {FILE_FORMAT} file")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise PredictorFileError(
                f"{where}: format version {version!r}, this code reads version {FORMAT_VERSION}"
                "; recalibrate to write a current file"
            )
        if data.get("device_class") != device_class:
            raise PredictorFileError(
                f"{where}: calibrated for device class {data.get('device_class')!r}, "
                f"not {device_class!r}"
            )
        if build is not None and data.get("build") != build:
            raise PredictorFileError(
                f"{where}: calibrated with build {data.get('build')!r}, this device runs "
                f"{build!r}; recalibrate"
            )
        try:
            correction = data["correction"]
            kernels = {kernel_from_json(e["kernel"]): float(e["seconds"]) for e in data["kernels"]}
            return cls(
                device_class=str(data["device_class"]),
                build=str(data["build"]),
                kernels=kernels,
                correction=Correction(
                    float(correction["intercept_seconds"]),
                    {str(k): float(v) for k, v in correction["coefficients"].items()},
                ),
                created=str(data["created"]),
                calibration=dict(data.get("calibration") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PredictorFileError(f"{where}: malformed: {err!r}") from None

    @classmethod
    def load(
        cls, path: str | Path, *, device_class: str, build: str | None = None
    ) -> LatencyPredictor:
        """Read a file written by :meth:`save`; see :meth:`from_json` for the checks."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise PredictorFileError(f"{path}: cannot read: {err}") from None
        if not isinstance(data, dict):
            raise PredictorFileError(f"{path}: not a JSON object")
        return cls.from_json(data, device_class=device_class, build=build, where=str(path))

"""The predictor interface and its adapter to the latency service's results.

Oracles time flatbuffers; a predictor needs the architecture itself, so it is not a
:class:`~services.latency.oracle.LatencyOracle`. :class:`PredictedLatency` answers with
the same :class:`~services.latency.oracle.LatencyResult` as an oracle (one sample: the
prediction) for a service to return in place of a measurement, without exporting.
"""

from __future__ import annotations

import threading
from typing import Protocol

from mnas.arch import Architecture
from mnas.latency import PREDICTED_SUFFIX
from services.latency.oracle import DeviceInfo, LatencyResult

__all__ = ["PREDICTED_SUFFIX", "PredictedLatency", "Predictor"]


class Predictor(Protocol):
    """Anything that predicts seconds per inference (batch 1) from an architecture."""

    device_class: str
    build: str

    def predict(
        self, arch: Architecture, *, resolution: int, width: float, num_classes: int
    ) -> float: ...


class PredictedLatency:
    """A predictor seen as a device: results without a device.

    ``device_class``: the name a service lists it under; by default the predictor's
    device class with :data:`PREDICTED_SUFFIX`, so that it stands beside the real oracle.
    """

    def __init__(self, predictor: Predictor, *, device_class: str | None = None) -> None:
        self.predictor = predictor
        self._device_class = device_class or predictor.device_class + PREDICTED_SUFFIX
        self._lock = threading.Lock()  # an unseen kernel may be measured on a live oracle

    @property
    def device_class(self) -> str:
        return self._device_class

    @property
    def device(self) -> str:
        return f"predictor ({self.predictor.build})"

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(id=self.device, device_class=self.device_class, model="predictor")]

    def measure(
        self, arch: Architecture, *, resolution: int, width: float, num_classes: int
    ) -> LatencyResult:
        """The prediction as a one-sample result (every statistic equals it)."""
        with self._lock:
            seconds = self.predictor.predict(
                arch, resolution=resolution, width=width, num_classes=num_classes
            )
        return LatencyResult(samples_seconds=(seconds,), device=self.device)

"""A host-CPU latency oracle that holds each measurement until the test lets it go, so a
test can act while a measurement is in flight."""

from __future__ import annotations

import threading

from services.latency.oracle import HostOracle, LatencyResult, MeasureSettings


class BlockedOracle(HostOracle):
    """Measures only once ``release`` is set (or after ``timeout`` seconds); ``entered``
    tells that a call is waiting."""

    def __init__(self, timeout: float = 300.0) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.timeout = timeout

    def measure(self, model_bytes: bytes, settings: MeasureSettings) -> LatencyResult:
        self.entered.set()
        self.release.wait(timeout=self.timeout)
        return super().measure(model_bytes, settings)

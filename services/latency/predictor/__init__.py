"""A latency predictor: per-kernel latencies measured once on a device class, summed and
corrected, so that a network's latency is known without running it (see docs/predictor.md)."""

from __future__ import annotations

from services.latency.predictor.adapter import PredictedLatency, Predictor
from services.latency.predictor.calibrate import (
    KernelMeasurer,
    calibrate,
    fit_correction,
    host_build,
    recalibrate,
)
from services.latency.predictor.kernels import (
    HeadKernel,
    Kernel,
    LayerKernel,
    StemKernel,
    network_kernels,
    space_kernels,
)
from services.latency.predictor.model import (
    FORMAT_VERSION,
    Correction,
    LatencyPredictor,
    PredictorFileError,
)

__all__ = [
    "FORMAT_VERSION",
    "Correction",
    "HeadKernel",
    "Kernel",
    "KernelMeasurer",
    "LatencyPredictor",
    "LayerKernel",
    "PredictedLatency",
    "Predictor",
    "PredictorFileError",
    "StemKernel",
    "calibrate",
    "fit_correction",
    "host_build",
    "network_kernels",
    "recalibrate",
    "space_kernels",
]

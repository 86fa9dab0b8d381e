"""The latency figure a result is judged by, and how predicted device classes are named."""

from __future__ import annotations

from mnas.v1.common_pb2 import LatencyStats

__all__ = ["PREDICTED_SUFFIX", "is_predicted", "reported_seconds"]

# A latency service serves a calibrated predictor of device class C as C + this suffix.
PREDICTED_SUFFIX = "-predicted"


def reported_seconds(stats: LatencyStats) -> float:
    """The robust figure, or the median from a latency service that reports none."""
    return stats.robust_seconds or stats.median_seconds


def is_predicted(device_class: str) -> bool:
    """Whether ``device_class`` names a predictor rather than devices."""
    return device_class.endswith(PREDICTED_SUFFIX)

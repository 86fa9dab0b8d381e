"""What identifies a latency measurement: the latency service caches results by it and the
controller's store records them under its text, so no architecture is measured twice."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from mnas.v1 import common_pb2

__all__ = ["MeasurementKey", "measurement_key"]


class Build(Protocol):
    """How the model is built: ``BuildParams``, the message or the latency service's."""

    @property
    def resolution(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def width(self) -> float: ...


class Timing(Protocol):
    """How the model is timed: ``LatencySettings`` or the service's ``MeasureSettings``."""

    @property
    def warmup_runs(self) -> int: ...
    @property
    def runs(self) -> int: ...
    @property
    def threads(self) -> int: ...


class MeasurementKey(NamedTuple):
    """The architecture, the device class, how the model is built and how it is timed."""

    architecture_id: str
    device_class: str
    resolution: int
    num_classes: int
    width: float
    warmup_runs: int
    runs: int
    threads: int

    @classmethod
    def of(
        cls, architecture_id: str, device_class: str, build: Build, timing: Timing
    ) -> MeasurementKey:
        """The key of measuring ``architecture_id`` on ``device_class`` so built and timed
        (messages count with their fields as they are: resolve a spec's defaults first)."""
        return cls(
            architecture_id,
            device_class,
            build.resolution,
            build.num_classes,
            float(build.width),
            timing.warmup_runs,
            timing.runs,
            timing.threads,
        )

    def text(self) -> str:
        """The key as one string, e.g. ``a1b2|host-cpu|224|1000|1.0|5|50|1``."""
        return "|".join(str(part) for part in self)


def measurement_key(
    architecture_id: str, settings: common_pb2.LatencySettings, build: common_pb2.BuildParams
) -> str:
    """The text of the key of a measurement asked for with these messages: what the
    controller's store records it under."""
    return MeasurementKey.of(architecture_id, settings.device_class, build, settings).text()

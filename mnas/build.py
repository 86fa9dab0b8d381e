"""How an architecture is instantiated: one definition for the latency service, the
trainer's jobs, the SDK's results and whoever builds a trial's network
(``mnas.build_model``).

A trainer's request may leave the resolution and the classes to its data set; the trainer
reads them off the data set before its job is made, so a job says exactly what it builds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.v1 import common_pb2
from mnas.validation import check_int

__all__ = ["MAX_CLASSES", "MAX_RESOLUTION", "MAX_WIDTH", "BuildParams"]

MAX_RESOLUTION = 2048
MAX_CLASSES = 100_000
MAX_WIDTH = 8.0


@dataclass(frozen=True)
class BuildParams:
    """The classes of the output, the input resolution (pixels a side) and the width
    multiplier; ImageNet's 1000 classes and 224 px unless given."""

    num_classes: int = DEFAULT_NUM_CLASSES
    resolution: int = DEFAULT_RESOLUTION
    width: float = DEFAULT_WIDTH

    def validate(self, prefix: str = "build") -> None:
        """Raise ``ValueError`` naming the first bad field (``build.resolution``, ...)."""
        check_int(f"{prefix}.resolution", self.resolution, 2, MAX_RESOLUTION)
        check_int(f"{prefix}.num_classes", self.num_classes, 1, MAX_CLASSES)
        width = self.width
        if isinstance(width, bool) or not isinstance(width, (int, float)):
            raise ValueError(f"{prefix}.width: expected a number, got {width!r}")
        if not (math.isfinite(width) and 0.0 < width <= MAX_WIDTH):
            raise ValueError(f"{prefix}.width: must be in (0, {MAX_WIDTH:g}], got {width}")

    @classmethod
    def from_spec(cls, spec: common_pb2.SearchSpec) -> BuildParams:
        """How a search's trials are built for training (a resolved spec's space)."""
        space = spec.space
        return cls(
            num_classes=space.num_classes or cls.num_classes,
            resolution=space.resolution or cls.resolution,
            width=space.width or cls.width,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "resolution": self.resolution, "width": self.width}

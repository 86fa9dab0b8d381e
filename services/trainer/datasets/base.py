"""What every data set format shares: its error, what a set holds, and a format's interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

if TYPE_CHECKING:
    from services.trainer.datasets.images import ImageFiles

__all__ = ["DatasetError", "DatasetInfo", "Format", "RawSet", "Summary"]

# classes, examples, native resolution and channels of a training set.
Summary: TypeAlias = tuple[int, int, int, int]


class DatasetError(ValueError):
    """A data set that cannot be used; ``str()`` is ``"<field>: <problem>"``."""

    def __init__(self, problem: str, field: str = "dataset") -> None:
        super().__init__(f"{field}: {problem}")
        self.problem = problem
        self.field = field


@dataclass(frozen=True)
class DatasetInfo:
    """What a spec's data set holds: ``format`` is one of :data:`FORMATS`, ``examples``
    counts the training images (held-out ones included), ``channels`` is 1 (grayscale) or
    3 (color; models always take 3), ``native_resolution`` the side its images are trained
    at by default (ImageFolder: the median shorter side of each class's first image)."""

    name: str
    format: str
    classes: int
    examples: int
    native_resolution: int
    channels: int


@dataclass(frozen=True, eq=False)
class RawSet:
    """A training set as read from disk: in-memory uint8 images (``(N, H, W)`` grayscale or
    ``(N, C, H, W)``) or image files, int64 labels, and how many classes there are."""

    format: str
    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: int
    native_resolution: int


@dataclass(frozen=True)
class Format:
    """One on-disk layout. ``claims(directory, files, folders)`` says whether a directory
    with these (non-hidden) file and folder names holds it, and may raise
    :class:`DatasetError` for a layout it recognises as broken; ``describe`` reads headers
    only (no image decoding); ``load`` reads the training set."""

    name: str
    claims: Callable[[Path, frozenset[str], tuple[str, ...]], bool]
    describe: Callable[[Path], Summary]
    load: Callable[[Path], RawSet]

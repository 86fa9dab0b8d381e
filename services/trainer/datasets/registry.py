"""The known data set formats, in the order a directory is matched against them, and what
works on any of them: find a spec's directory, tell its format, describe it, load it."""

from __future__ import annotations

import os
from pathlib import Path

from services.trainer.datasets import cifar, idx, imagefolder
from services.trainer.datasets.base import DatasetError, DatasetInfo, Format, RawSet
from services.trainer.datasets.idx import TRAIN_IMAGES, TRAIN_LABELS

__all__ = [
    "FASHION_MNIST",
    "FASHION_MNIST_DIR",
    "FORMATS",
    "dataset_dir",
    "describe_dataset",
    "detect_format",
    "load_raw",
]

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

# The first format that claims a directory holds it.
_REGISTRY: dict[str, Format] = {f.name: f for f in (idx.FORMAT, *cifar.FORMATS, imagefolder.FORMAT)}
FORMATS = tuple(_REGISTRY)


def dataset_dir(name: str) -> Path:
    """The directory of ``name``: ``"fashion-mnist"`` is Debian's, anything else a path."""
    if not name:
        raise DatasetError(
            "empty; give 'fashion-mnist' or a directory (IDX files, CIFAR-10/100 python "
            "batches or class folders of images)"
        )
    path = FASHION_MNIST_DIR if name == FASHION_MNIST else Path(name)
    if not path.is_dir():
        raise DatasetError(f"directory not found: {path}")
    return path


def detect_format(directory: Path) -> str:
    """Which of :data:`FORMATS` ``directory`` holds, from its entries' names."""
    return _detect(directory).name


def _detect(directory: Path) -> Format:
    try:
        with os.scandir(directory) as entries:
            listed = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    except OSError as err:
        raise DatasetError(f"{directory}: cannot list: {err.strerror or err}") from None
    files = frozenset(name for name, is_dir in listed if not is_dir)
    folders = tuple(name for name, is_dir in listed if is_dir)
    for candidate in _REGISTRY.values():
        if candidate.claims(directory, files, folders):
            return candidate
    raise DatasetError(
        f"{directory}: not a known data set layout: expected IDX files ({TRAIN_IMAGES}[.gz] "
        f"and {TRAIN_LABELS}[.gz]), CIFAR-10/100 python batches (data_batch_1..5 and "
        "batches.meta, or train and meta) or one folder of images per class"
    )


def describe_dataset(dataset: str) -> DatasetInfo:
    """Format, classes, size, resolution and channels of the data set a spec names.

    Reads IDX headers, labels and CIFAR pickles, lists ImageFolder trees and reads the
    header of each class's first file; decodes no images. Raises ``ValueError``
    (``"training.dataset: <path>: <what is wrong>"``) for what that shows to be wrong.
    """
    try:
        directory = dataset_dir(dataset)
        kind = _detect(directory)
        classes, examples, resolution, channels = kind.describe(directory)
    except DatasetError as err:
        raise DatasetError(err.problem, "training.dataset") from None
    except OSError as err:
        raise DatasetError(_os_problem(err, dataset), "training.dataset") from None
    return DatasetInfo(
        name=dataset,
        format=kind.name,
        classes=classes,
        examples=examples,
        native_resolution=resolution,
        channels=channels,
    )


def load_raw(directory: Path) -> RawSet:
    """Read the training set in ``directory`` (image files stay on disk)."""
    kind = _detect(directory)
    try:
        return kind.load(directory)
    except OSError as err:
        raise DatasetError(_os_problem(err, str(directory))) from None


def _os_problem(err: OSError, fallback: str) -> str:
    return f"{err.filename or fallback}: cannot read: {err.strerror or err}"

"""Training data as model input: the held-out validation split and batches of tensors.

Only the training split of a data set is used: a fixed, seeded permutation of it holds
``validation_examples`` images out for accuracy (as MnasNet held out part of ImageNet's
training set) and trains on the rest, so the test split never steers a search. Decoded
sets are cached per process, since every trial of a search reloads the same files. The
formats themselves (IDX, CIFAR-10/100, ImageFolder) live in
:mod:`services.trainer.datasets`.

Model input is always 3 channels (grayscale is repeated), normalized per channel with the
data set's own pixel statistics, resized to the requested resolution. ImageFolder sets
train on random resized crops with horizontal flips and evaluate on a resized center crop;
in-memory sets (IDX, CIFAR) are resized whole.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F

from mnas.errors import InvalidInput
from services.trainer.datasets import (
    FASHION_MNIST,
    FASHION_MNIST_DIR,
    IMAGE_FOLDER,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetError,
    ImageFiles,
    dataset_dir,
    load_raw,
    read_idx,
)

__all__ = [
    "CENTER_CROP_FRACTION",
    "CROP_RATIO",
    "CROP_SCALE",
    "FASHION_MNIST",
    "FASHION_MNIST_DIR",
    "IMAGE_CHANNELS",
    "MEAN",
    "NATIVE_RESOLUTION",
    "STD",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "DatasetError",
    "HeldOutSplit",
    "ImageSet",
    "dataset_dir",
    "held_out_split",
    "load_training_set",
    "read_idx",
    "to_input",
]

_logger = logging.getLogger(__name__)

NATIVE_RESOLUTION = 28  # Fashion-MNIST's
IMAGE_CHANNELS = 3  # the builders' stem takes RGB; grayscale is repeated
# Per-pixel mean and standard deviation of Fashion-MNIST's training images (0..1 scale).
MEAN = 0.2860
STD = 0.3530
# Inception-style training crops (as torchvision's RandomResizedCrop): a fraction of the
# area and an aspect ratio drawn uniformly (the ratio on a log scale).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CENTER_CROP_FRACTION = 0.875  # evaluation: resize to R / 0.875, keep the central R x R
_CROP_ATTEMPTS = 10
_STATS_FILES = 64  # image files decoded to estimate an ImageFolder set's pixel statistics

Index: TypeAlias = np.ndarray | slice


@dataclass(frozen=True)
class ImageSet:
    """Labelled uint8 images and how to turn them into model input.

    ``images`` is ``(N, H, W)`` (grayscale) or ``(N, C, H, W)`` in memory, or
    :class:`~services.trainer.datasets.ImageFiles` decoded per batch; ``labels`` int64.
    ``classes`` 0 means ``max(labels) + 1``; ``mean``/``std`` (0..1 scale, one per channel
    or one for all) normalize; ``augment`` turns on crops and flips for training batches.
    """

    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: int = 0
    native_resolution: int = NATIVE_RESOLUTION
    mean: tuple[float, ...] = (MEAN,)
    std: tuple[float, ...] = (STD,)
    augment: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        if self.classes:
            return self.classes
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, index: Index) -> ImageSet:
        """The images (and labels) at ``index``, with this set's settings."""
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index])

    def batch(
        self,
        index: Index,
        resolution: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Model input ``(n, 3, R, R)`` for the images at ``index``.

        With a ``generator`` an augmenting set draws a training view (random resized crop,
        flip); without one every set gives its evaluation view.
        """
        if isinstance(self.images, np.ndarray):
            chosen = self.images[index]
            if not chosen.flags.writeable:  # a view of a cached set: torch wants its own
                chosen = chosen.copy()
            raw = torch.from_numpy(chosen).to(device)
            return to_input(raw, resolution, self.mean, self.std)
        files = self.images[index]
        random = generator if self.augment else None
        views = [
            _view(torch.from_numpy(files.read(i)), resolution, random) for i in range(len(files))
        ]
        x = torch.stack(views).to(device)
        return _normalize(x, self.mean, self.std).contiguous()


@dataclass(frozen=True)
class HeldOutSplit:
    """The training subset and the held-out validation subset of one training set."""

    train: ImageSet
    validation: ImageSet
    num_classes: int
    resolution: int = NATIVE_RESOLUTION  # the data set's native one


@lru_cache(maxsize=4)
def _load(directory: Path) -> ImageSet:
    raw = load_raw(directory)
    images, labels = raw.images, raw.labels
    if isinstance(images, np.ndarray):
        images.setflags(write=False)
        mean, std = _array_stats(images)
    else:
        mean, std = _file_stats(images)
    labels.setflags(write=False)
    _logger.info(
        "loaded %d training images (%s, %d classes) from %s",
        labels.shape[0],
        raw.format,
        raw.classes,
        directory,
    )
    return ImageSet(
        images=images,
        labels=labels,
        classes=raw.classes,
        native_resolution=raw.native_resolution,
        mean=mean,
        std=std,
        augment=raw.format == IMAGE_FOLDER,
    )


def load_training_set(dataset: str) -> ImageSet:
    """The whole training split of ``dataset``, decoded once per process."""
    return _load(dataset_dir(dataset).resolve())


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    order.setflags(write=False)
    return order


def held_out_split(
    dataset: str, *, seed: int, validation_examples: int = 10000, train_examples: int = 0
) -> HeldOutSplit:
    """Split the training set of ``dataset`` into train and held-out validation subsets.

    The split depends on ``seed`` and ``validation_examples`` only, so every trial of a
    search sees the same held-out images; ``train_examples`` (0: all the rest) only picks
    how many of the remaining images are trained on.
    """
    if validation_examples < 1:
        raise InvalidInput(f"validation_examples: must be >= 1, got {validation_examples}")
    if train_examples < 0:
        raise InvalidInput(f"train_examples: must be >= 0, got {train_examples}")
    full = load_training_set(dataset)
    n = len(full)
    if validation_examples >= n:
        raise InvalidInput(
            f"validation_examples: {validation_examples} leaves nothing to train on "
            f"({n} training images in {dataset})"
        )
    available = n - validation_examples
    if train_examples > available:
        raise InvalidInput(
            f"train_examples: {train_examples} exceeds the {available} images not held out "
            f"({n} in {dataset}, validation_examples {validation_examples})"
        )
    order = _permutation(n, seed)
    held = np.sort(order[:validation_examples])
    used = order[validation_examples : validation_examples + (train_examples or available)]
    return HeldOutSplit(
        train=full.subset(used),
        validation=full.subset(held),
        num_classes=full.num_classes,
        resolution=full.native_resolution,
    )


def to_input(
    images: torch.Tensor,
    resolution: int,
    mean: float | Sequence[float] = MEAN,
    std: float | Sequence[float] = STD,
) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` images as normalized ``(N, 3, R, R)`` input."""
    x = images.to(torch.float32, copy=True)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    x = _normalize(x, mean, std, scale=255.0)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, IMAGE_CHANNELS, -1, -1)
    return x.contiguous()


def _normalize(
    x: torch.Tensor,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    scale: float = 1.0,
) -> torch.Tensor:
    """``(x / scale - mean) / std`` per channel, in place on ``x``."""
    means = [mean] if isinstance(mean, float | int) else list(mean)
    stds = [std] if isinstance(std, float | int) else list(std)
    if len(means) == 1 and len(stds) == 1:
        return x.mul_(1.0 / (scale * stds[0])).sub_(means[0] / stds[0])
    shape = (1, -1, 1, 1)
    factor = torch.tensor([1.0 / (scale * s) for s in stds], dtype=x.dtype, device=x.device)
    shift = torch.tensor(
        [m / s for m, s in zip(means, stds, strict=True)], dtype=x.dtype, device=x.device
    )
    if x.shape[1] != factor.shape[0]:
        x = x.expand(-1, factor.shape[0], -1, -1).clone()
    return x.mul_(factor.view(shape)).sub_(shift.view(shape))


def _view(image: torch.Tensor, resolution: int, generator: torch.Generator | None) -> torch.Tensor:
    """One uint8 ``(C, H, W)`` image as float ``(3, R, R)`` on the 0..1 scale: a random
    resized crop (flipped half the time) with a ``generator``, else the center crop."""
    _, height, width = image.shape
    if generator is None:
        side = max(1, round(CENTER_CROP_FRACTION * min(height, width)))
        top, left, h, w = (height - side) // 2, (width - side) // 2, side, side
    else:
        top, left, h, w = _random_box(height, width, generator)
    crop = image[:, top : top + h, left : left + w].to(torch.float32).div_(255.0).unsqueeze(0)
    if (h, w) != (resolution, resolution):
        crop = F.interpolate(
            crop,
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    if generator is not None and float(torch.rand((), generator=generator)) < 0.5:
        crop = crop.flip(-1)
    view = crop[0]
    return view.expand(IMAGE_CHANNELS, -1, -1) if view.shape[0] == 1 else view


def _random_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """Top, left, height, width of a random crop within :data:`CROP_SCALE` and
    :data:`CROP_RATIO`; the largest centered box of a valid ratio when none fits."""
    area = height * width
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(_CROP_ATTEMPTS):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (CROP_SCALE[0] + u[0] * (CROP_SCALE[1] - CROP_SCALE[0]))
        ratio = math.exp(log_low + u[1] * (log_high - log_low))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        h, w = height, round(height * CROP_RATIO[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _array_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact mean and standard deviation (0..1 scale) per channel, from pixel histograms."""
    planes = [images] if images.ndim == 3 else [images[:, c] for c in range(images.shape[1])]
    return _histogram_stats([_pixel_counts(p.reshape(-1)) for p in planes])


def _pixel_counts(pixels: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """How many pixels take each of the 256 values; in chunks, which is several times
    faster than one ``bincount`` of the whole set (it widens its input to 64 bits)."""
    counts = np.zeros(256, dtype=np.int64)
    for begin in range(0, pixels.size, chunk):
        counts += np.bincount(pixels[begin : begin + chunk], minlength=256)
    return counts


def _file_stats(files: ImageFiles) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (RGB) statistics of up to :data:`_STATS_FILES` evenly spaced files."""
    counts = [np.zeros(256, dtype=np.int64) for _ in range(IMAGE_CHANNELS)]
    picks = np.unique(np.linspace(0, len(files) - 1, min(len(files), _STATS_FILES)).astype(int))
    for i in picks:
        image = files.read(int(i))
        for c in range(IMAGE_CHANNELS):
            counts[c] += np.bincount(image[c % image.shape[0]].reshape(-1), minlength=256)
    return _histogram_stats(counts)


def _histogram_stats(
    counts: list[np.ndarray],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    values = np.arange(256, dtype=np.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for count in counts:
        total = float(count.sum())
        mean = float((count * values).sum() / total)
        var = float((count * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(math.sqrt(var), 1e-3))  # a constant channel must not divide by 0
    return tuple(means), tuple(stds)

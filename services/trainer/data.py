"""Training data: IDX image sets (Fashion-MNIST) and the held-out validation split.

Only the training split of a data set is used: a fixed, seeded permutation of it holds
``validation_examples`` images out for accuracy (as MnasNet held out part of ImageNet's
training set) and trains on the rest, so the test split never steers a search. Decoded
arrays are cached per process, since every trial of a search reloads the same files.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FASHION_MNIST",
    "FASHION_MNIST_DIR",
    "IMAGE_CHANNELS",
    "MEAN",
    "NATIVE_RESOLUTION",
    "STD",
    "HeldOutSplit",
    "ImageSet",
    "dataset_dir",
    "held_out_split",
    "load_training_set",
    "read_idx",
    "to_input",
]

_logger = logging.getLogger(__name__)

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
NATIVE_RESOLUTION = 28
IMAGE_CHANNELS = 3  # the builders' stem takes RGB; grayscale is repeated
# Per-pixel mean and standard deviation of Fashion-MNIST's training images (0..1 scale).
MEAN = 0.2860
STD = 0.3530

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


@dataclass(frozen=True)
class ImageSet:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` int64, both read-only."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0


@dataclass(frozen=True)
class HeldOutSplit:
    """The training subset and the held-out validation subset of one training set."""

    train: ImageSet
    validation: ImageSet
    num_classes: int


def dataset_dir(name: str) -> Path:
    """The directory of ``name``: ``"fashion-mnist"`` is Debian's, anything else a path."""
    if not name:
        raise ValueError("dataset: empty; give 'fashion-mnist' or a directory of IDX files")
    path = FASHION_MNIST_DIR if name == FASHION_MNIST else Path(name)
    if not path.is_dir():
        raise ValueError(f"dataset: directory not found: {path}")
    return path


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (gzip'd when its name ends in ``.gz``); ``ValueError`` names it."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"dataset: file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"dataset: cannot read {path}: {err}") from None
    if len(raw) < 4:
        raise ValueError(f"dataset: {path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise ValueError(f"dataset: {path}: bad IDX magic number 0x{raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"dataset: {path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"dataset: {path}: header says shape {shape} ({expected} bytes of data), "
            f"file has {len(raw) - header}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise ValueError(f"dataset: file not found: {directory / stem}.gz")


@lru_cache(maxsize=4)
def _load(directory: Path) -> ImageSet:
    images_path = _find(directory, TRAIN_IMAGES)
    labels_path = _find(directory, TRAIN_LABELS)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"dataset: {images_path}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"dataset: {labels_path}: expected uint8 labels of shape (N,), "
            f"got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"dataset: {images_path} has {images.shape[0]} images but {labels_path} "
            f"has {labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise ValueError(f"dataset: {images_path}: no images")
    labels64 = labels.astype(np.int64)
    images.setflags(write=False)
    labels64.setflags(write=False)
    _logger.info("loaded %d training images %s from %s", images.shape[0],
                 images.shape[1:], directory)
    return ImageSet(images=images, labels=labels64)


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
        raise ValueError(f"validation_examples: must be >= 1, got {validation_examples}")
    if train_examples < 0:
        raise ValueError(f"train_examples: must be >= 0, got {train_examples}")
    full = load_training_set(dataset)
    n = len(full)
    if validation_examples >= n:
        raise ValueError(
            f"validation_examples: {validation_examples} leaves nothing to train on "
            f"({n} training images in {dataset})"
        )
    available = n - validation_examples
    if train_examples > available:
        raise ValueError(
            f"train_examples: {train_examples} exceeds the {available} images not held out "
            f"({n} in {dataset}, validation_examples {validation_examples})"
        )
    order = _permutation(n, seed)
    held = np.sort(order[:validation_examples])
    used = order[validation_examples:validation_examples + (train_examples or available)]
    return HeldOutSplit(
        train=ImageSet(images=full.images[used], labels=full.labels[used]),
        validation=ImageSet(images=full.images[held], labels=full.labels[held]),
        num_classes=full.num_classes,
    )


def to_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 ``(N, H, W)`` images as normalized float ``(N, 3, R, R)`` model input."""
    x = (images.to(torch.float32).unsqueeze(1) / 255.0 - MEAN) / STD
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    out: torch.Tensor = x.expand(-1, IMAGE_CHANNELS, -1, -1).contiguous()
    return out

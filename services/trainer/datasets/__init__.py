"""On-disk training sets: tell a directory's format, describe it cheaply, decode it.

A spec's ``training.dataset`` is ``"fashion-mnist"`` (Debian's copy) or a directory, whose
contents say its format; each format is a module here, listed in
:mod:`~services.trainer.datasets.registry` in the order a directory is matched:

- ``idx`` (:mod:`~services.trainer.datasets.idx`): ``train-images-idx3-ubyte[.gz]`` and
  ``train-labels-idx1-ubyte[.gz]`` (MNIST's layout), uint8 grayscale images ``(N, H, W)``;
- ``cifar-10`` and ``cifar-100`` (:mod:`~services.trainer.datasets.cifar`): the published
  python pickles ``data_batch_1`` .. ``data_batch_5`` and ``batches.meta``, or ``train``
  and ``meta`` (fine labels). Each batch holds ``N x 3072`` uint8 rows in channel-major
  order (1024 red, 1024 green, 1024 blue);
- ``imagefolder`` (:mod:`~services.trainer.datasets.imagefolder`): one folder per class
  (sorted names give the labels), holding image files at any depth
  (:mod:`~services.trainer.datasets.images`): ``.npy`` (uint8, ``(H, W)`` or ``(H, W, C)``
  with C 1 or 3) and netpbm ``.pgm``/``.ppm``/``.pnm`` (P2, P3, P5, P6; maxval up to
  65535, scaled to 8 bits). PNG and JPEG are not read: that needs Pillow, which this
  project does not install.

Nothing here imports torch, so the controller can check a spec's data set with
:func:`describe_dataset` (headers only, no image decoding). Pickles are read by an
unpickler that admits numpy arrays and nothing else, so a data set path cannot run code.
"""

from __future__ import annotations

from services.trainer.datasets.base import DatasetError, DatasetInfo, RawSet
from services.trainer.datasets.cifar import CIFAR10, CIFAR100
from services.trainer.datasets.idx import IDX, TRAIN_IMAGES, TRAIN_LABELS, read_idx
from services.trainer.datasets.imagefolder import IMAGE_FOLDER
from services.trainer.datasets.images import IMAGE_SUFFIXES, ImageFiles, image_shape, read_image
from services.trainer.datasets.registry import (
    FASHION_MNIST,
    FASHION_MNIST_DIR,
    FORMATS,
    dataset_dir,
    describe_dataset,
    detect_format,
    load_raw,
)

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "FASHION_MNIST",
    "FASHION_MNIST_DIR",
    "FORMATS",
    "IDX",
    "IMAGE_FOLDER",
    "IMAGE_SUFFIXES",
    "TRAIN_IMAGES",
    "TRAIN_LABELS",
    "DatasetError",
    "DatasetInfo",
    "ImageFiles",
    "RawSet",
    "dataset_dir",
    "describe_dataset",
    "detect_format",
    "image_shape",
    "load_raw",
    "read_idx",
    "read_image",
]

"""The IDX format (MNIST's layout): ``train-images-idx3-ubyte[.gz]`` and
``train-labels-idx1-ubyte[.gz]``, uint8 grayscale images ``(N, H, W)`` and their labels."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from services.trainer.datasets.base import DatasetError, Format, RawSet, Summary

__all__ = ["FORMAT", "IDX", "TRAIN_IMAGES", "TRAIN_LABELS", "read_idx"]

IDX = "idx"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Decode one IDX file (gzip'd when its name ends in ``.gz``); ``ValueError`` names it."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    dtype, shape, header = _idx_header(raw, path)
    _check_idx_size(path, dtype, shape, len(raw) - header)
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_header(raw: bytes, path: Path) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """The dtype, shape and header length of the IDX file starting with ``raw``."""
    if len(raw) < 4:
        raise DatasetError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise DatasetError(f"{path}: bad IDX magic number 0x{raw[:4].hex()}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.dtype(_IDX_DTYPES[code]), shape, header


def _check_idx_size(path: Path, dtype: np.dtype[Any], shape: tuple[int, ...], data: int) -> None:
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data != expected:
        raise DatasetError(
            f"{path}: header says shape {shape} ({expected} bytes of data), file has {data}"
        )


def _idx_file_header(path: Path) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """Dtype and shape of an IDX file, checked against its size without decoding it."""
    try:
        if path.suffix != ".gz":
            with path.open("rb") as f:
                head = f.read(4 + 4 * 255)
            dtype, shape, header = _idx_header(head, path)
            _check_idx_size(path, dtype, shape, path.stat().st_size - header)
            return dtype, shape
        with gzip.open(path, "rb") as g:
            head = g.read(4 + 4 * 255)
        dtype, shape, header = _idx_header(head, path)
        expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if _gzip_size_field(path) != expected % 2**32:  # multi-member or wrong: count
            _check_idx_size(path, dtype, shape, _gunzipped_size(path) - header)
        return dtype, shape
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None


def _gzip_size_field(path: Path) -> int:
    """The ISIZE trailer of a gzip file: its last member's length mod 2**32."""
    with path.open("rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _gunzipped_size(path: Path) -> int:
    size = 0
    with gzip.open(path, "rb") as g:
        while chunk := g.read(1 << 20):
            size += len(chunk)
    return size


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"file not found: {directory / stem}.gz")


def _check_idx_pair(
    images_path: Path,
    images: tuple[np.dtype[Any], tuple[int, ...]],
    labels_path: Path,
    labels: tuple[np.dtype[Any], tuple[int, ...]],
) -> None:
    (image_type, image_shape), (label_type, label_shape) = images, labels
    if len(image_shape) != 3 or image_type != np.uint8:
        raise DatasetError(
            f"{images_path}: expected uint8 images of shape (N, H, W), "
            f"got {image_type} {image_shape}"
        )
    if len(label_shape) != 1 or label_type != np.uint8:
        raise DatasetError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {label_type} {label_shape}"
        )
    if image_shape[0] != label_shape[0]:
        raise DatasetError(
            f"{images_path} has {image_shape[0]} images but {labels_path} "
            f"has {label_shape[0]} labels"
        )
    if image_shape[0] == 0:
        raise DatasetError(f"{images_path}: no images")
    if min(image_shape[1:]) == 0:
        raise DatasetError(f"{images_path}: empty images of shape {image_shape[1:]}")


def _claims(directory: Path, files: frozenset[str], folders: tuple[str, ...]) -> bool:
    return bool(files & {TRAIN_IMAGES, f"{TRAIN_IMAGES}.gz", TRAIN_LABELS, f"{TRAIN_LABELS}.gz"})


def _describe(directory: Path) -> Summary:
    images_path = _find_idx(directory, TRAIN_IMAGES)
    labels_path = _find_idx(directory, TRAIN_LABELS)
    images = _idx_file_header(images_path)
    labels = read_idx(labels_path)
    _check_idx_pair(images_path, images, labels_path, (labels.dtype, labels.shape))
    n, height, width = images[1]
    return int(labels.max()) + 1, n, max(height, width), 1


def _load(directory: Path) -> RawSet:
    images_path = _find_idx(directory, TRAIN_IMAGES)
    labels_path = _find_idx(directory, TRAIN_LABELS)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_idx_pair(
        images_path, (images.dtype, images.shape), labels_path, (labels.dtype, labels.shape)
    )
    return RawSet(
        format=IDX,
        images=images,
        labels=labels.astype(np.int64),
        classes=int(labels.max()) + 1,
        native_resolution=max(images.shape[1:]),
    )


FORMAT = Format(IDX, _claims, _describe, _load)

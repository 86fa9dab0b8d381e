"""IDX parsing, the held-out split and model input conversion."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer import data
from services.trainer.datasets import ImageFiles


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_set(directory: Path, images: np.ndarray, labels: np.ndarray, *, gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in ((data.TRAIN_IMAGES, images), (data.TRAIN_LABELS, labels)):
        raw = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)


def numbered_set(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 4x4 images whose first two pixels spell their index, labels index % 10."""
    images = np.zeros((n, 4, 4), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) // 256
    images[:, 0, 1] = np.arange(n) % 256
    return images, (np.arange(n) % 10).astype(np.uint8)


def indices(images: np.ndarray | ImageFiles) -> set[int]:
    assert isinstance(images, np.ndarray)
    return {int(a) * 256 + int(b) for a, b in zip(images[:, 0, 0], images[:, 0, 1], strict=True)}


def test_fashion_mnist_training_set_loads_once() -> None:
    full = data.load_training_set("fashion-mnist")
    assert isinstance(full.images, np.ndarray)
    assert full.images.shape == (60000, 28, 28)
    assert full.images.dtype == np.uint8
    assert full.labels.shape == (60000,)
    assert full.num_classes == 10
    assert data.load_training_set("fashion-mnist") is full
    assert data.load_training_set(str(data.FASHION_MNIST_DIR)) is full
    assert not full.images.flags.writeable


def test_read_idx_round_trips_other_types(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    path = tmp_path / "ints-idx3"
    path.write_bytes(idx_bytes(array, code=0x0C))
    np.testing.assert_array_equal(data.read_idx(path), array)


def test_gzip_and_plain_directories_load(tmp_path: Path) -> None:
    images, labels = numbered_set(30)
    write_set(tmp_path / "gz", images, labels)
    write_set(tmp_path / "plain", images, labels, gz=False)
    for name in ("gz", "plain"):
        loaded = data.load_training_set(str(tmp_path / name))
        np.testing.assert_array_equal(loaded.images, images)
        np.testing.assert_array_equal(loaded.labels, labels)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x03" + b"\x00" * 12, "magic"),
        (b"\x00\x00\x42\x03" + b"\x00" * 12, "magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8))[:-3], "header says shape"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8)) + b"\x00", "header says shape"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path: Path, raw: bytes, match: str) -> None:
    directory = tmp_path / "bad"
    write_set(directory, *numbered_set(2))
    path = directory / f"{data.TRAIN_IMAGES}.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match=match) as info:
        data.load_training_set(str(directory))
    assert str(path) in str(info.value)


def test_not_gzip_names_the_file(tmp_path: Path) -> None:
    write_set(tmp_path, *numbered_set(2))
    path = tmp_path / f"{data.TRAIN_LABELS}.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read") as info:
        data.load_training_set(str(tmp_path))
    assert str(path) in str(info.value)


def test_mismatched_counts_and_shapes_are_refused(tmp_path: Path) -> None:
    images, labels = numbered_set(5)
    write_set(tmp_path / "counts", images, labels[:4])
    with pytest.raises(ValueError, match=r"5 images but .* 4 labels"):
        data.load_training_set(str(tmp_path / "counts"))
    write_set(tmp_path / "shape", images.reshape(5, 16), labels)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        data.load_training_set(str(tmp_path / "shape"))


def test_missing_directory_and_file_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=f"dataset: directory not found: {missing}"):
        data.load_training_set(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte") as info:
        data.load_training_set(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(ValueError, match="dataset: empty"):
        data.load_training_set("")


def test_split_is_deterministic_disjoint_and_independent_of_train_examples(
    tmp_path: Path,
) -> None:
    write_set(tmp_path, *numbered_set(300))
    a = data.held_out_split(str(tmp_path), seed=7, validation_examples=100)
    b = data.held_out_split(str(tmp_path), seed=7, validation_examples=100)
    np.testing.assert_array_equal(a.validation.images, b.validation.images)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    held, trained = indices(a.validation.images), indices(a.train.images)
    assert len(held) == 100 and len(trained) == 200
    assert held.isdisjoint(trained)
    assert held | trained == set(range(300))

    small = data.held_out_split(str(tmp_path), seed=7, validation_examples=100, train_examples=50)
    np.testing.assert_array_equal(small.validation.images, a.validation.images)
    assert len(small.train) == 50
    assert indices(small.train.images) <= trained

    other = data.held_out_split(str(tmp_path), seed=8, validation_examples=100)
    assert indices(other.validation.images) != held


def test_labels_stay_with_their_images(tmp_path: Path) -> None:
    write_set(tmp_path, *numbered_set(120))
    split = data.held_out_split(str(tmp_path), seed=1, validation_examples=20)
    for part in (split.train, split.validation):
        assert isinstance(part.images, np.ndarray)
        ids = np.asarray(part.images[:, 0, 0], np.int64) * 256 + part.images[:, 0, 1]
        np.testing.assert_array_equal(ids % 10, part.labels)
    assert split.num_classes == 10


def test_fashion_mnist_default_split_sizes() -> None:
    split = data.held_out_split("fashion-mnist", seed=0)
    assert len(split.validation) == 10000
    assert len(split.train) == 50000
    assert split.num_classes == 10


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"validation_examples": 0}, "validation_examples"),
        ({"validation_examples": 50}, "validation_examples"),
        ({"validation_examples": 10, "train_examples": 41}, "train_examples"),
        ({"validation_examples": 10, "train_examples": -1}, "train_examples"),
    ],
)
def test_impossible_split_sizes_name_the_field(
    tmp_path: Path, kwargs: dict[str, int], field: str
) -> None:
    write_set(tmp_path, *numbered_set(50))
    with pytest.raises(ValueError, match=f"^{field}:"):
        data.held_out_split(str(tmp_path), seed=0, **kwargs)


def test_to_input_normalizes_repeats_channels_and_resizes() -> None:
    images = torch.zeros((2, 28, 28), dtype=torch.uint8)
    images[1] = 255
    x = data.to_input(images, 28)
    assert x.shape == (2, 3, 28, 28)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], -data.MEAN / data.STD))
    assert torch.allclose(x[1], torch.full_like(x[1], (1 - data.MEAN) / data.STD))
    big = data.to_input(images, 64)
    assert big.shape == (2, 3, 64, 64)
    assert torch.allclose(big[1], torch.full_like(big[1], (1 - data.MEAN) / data.STD))

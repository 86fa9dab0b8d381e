"""Data set formats (CIFAR-10/100, ImageFolder, IDX): loading, splits, description, errors."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mnas.arch import decode
from services.trainer import data, datasets
from services.trainer.training import TrainingConfig, train

TINY = decode(
    "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16 r1_k3_s22_e3_i16_o24_se0.25 "
    "head:64 act:relu dropout:0"
)


# --- writers for each format ---------------------------------------------------------------


def numbered_rows(start: int, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    """CIFAR rows whose red plane's first two pixels spell their index; the green plane is
    ``label * 20`` and the blue plane 200, so the channel order and the classes show."""
    rows = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    ids = np.arange(start, start + n)
    labels = ids % classes
    rows[:, 0, 0, 0] = ids // 256
    rows[:, 0, 0, 1] = ids % 256
    rows[:, 1] = (labels * 20 % 256)[:, None, None]
    rows[:, 2] = 200
    return rows.reshape(n, 3072), [int(x) for x in labels]


def ids_of(images: np.ndarray) -> set[int]:
    return {
        int(a) * 256 + int(b) for a, b in zip(images[:, 0, 0, 0], images[:, 0, 0, 1], strict=True)
    }


def pixels(images: data.ImageSet) -> np.ndarray:
    assert isinstance(images.images, np.ndarray)
    return images.images


def paths_of(images: data.ImageSet) -> list[str]:
    assert isinstance(images.images, datasets.ImageFiles)
    return [str(p) for p in images.images.paths]


def dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(directory: Path, per_batch: int = 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        rows, labels = numbered_rows(b * per_batch, per_batch, 10)
        dump(
            directory / f"data_batch_{b + 1}",
            {b"batch_label": b"x", b"data": rows, b"labels": labels},
        )
    dump(
        directory / "batches.meta",
        {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072},
    )
    return directory


def write_cifar100(directory: Path, n: int = 60) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows, labels = numbered_rows(0, n, 7)  # only 7 of the 100 classes occur; numpy labels
    dump(
        directory / "train",
        {
            "data": rows,
            "fine_labels": [np.int64(x) for x in labels],
            "coarse_labels": [x // 5 for x in labels],
        },
    )
    dump(directory / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    return directory


def ppm(image: np.ndarray, *, ascii_: bool = False, maxval: int = 255) -> bytes:
    """A netpbm file for ``(H, W)`` (PGM) or ``(H, W, 3)`` (PPM) values <= maxval."""
    color = image.ndim == 3
    magic = (b"P3" if color else b"P2") if ascii_ else (b"P6" if color else b"P5")
    header = magic + b"\n# a comment\n%d %d\n%d\n" % (image.shape[1], image.shape[0], maxval)
    if ascii_:
        return header + b" ".join(b"%d" % v for v in image.reshape(-1)) + b"\n"
    dtype = ">u2" if maxval > 255 else "u1"
    return header + image.astype(dtype).tobytes()


def write_image_folder(directory: Path) -> Path:
    """Three classes of mixed files: gray and color, .npy and netpbm, sizes 20..40."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cat")):
        folder = directory / name
        (folder / "nested").mkdir(parents=True)
        for i in range(6):
            h, w = 20 + 4 * i, 40 - 2 * i
            if i % 3 == 0:
                np.save(folder / f"{i}.npy", np.full((h, w, 3), 40 * c + i, dtype=np.uint8))
            elif i % 3 == 1:
                (folder / f"{i}.pgm").write_bytes(ppm(rng.integers(0, 256, (h, w))))
            else:
                (folder / "nested" / f"{i}.ppm").write_bytes(ppm(rng.integers(0, 256, (h, w, 3))))
        (folder / "README.txt").write_text("ignored")
    return directory


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(directory: Path, n: int = 12) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    images = np.zeros((n, 6, 5), dtype=np.uint8)
    labels = (np.arange(n) % 4).astype(np.uint8)
    (directory / f"{data.TRAIN_IMAGES}.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (directory / data.TRAIN_LABELS).write_bytes(idx_bytes(labels))
    return directory


# --- loading ---------------------------------------------------------------------------------


def test_cifar10_loads_channel_major_rows_and_meta_classes(tmp_path: Path) -> None:
    full = data.load_training_set(str(write_cifar10(tmp_path / "c10")))
    assert pixels(full).shape == (100, 3, 32, 32)
    assert ids_of(pixels(full)) == set(range(100))
    np.testing.assert_array_equal(full.labels, np.arange(100) % 10)
    images = pixels(full)
    assert (images[:, 2] == 200).all()  # blue plane last
    np.testing.assert_array_equal(images[:, 1, 5, 5], full.labels * 20)
    assert full.num_classes == 10
    assert full.native_resolution == 32
    assert len(full.mean) == len(full.std) == 3
    assert full.mean[2] == pytest.approx(200 / 255)
    assert not full.augment


def test_cifar100_uses_fine_labels_and_the_meta_class_count(tmp_path: Path) -> None:
    full = data.load_training_set(str(write_cifar100(tmp_path / "c100")))
    assert pixels(full).shape == (60, 3, 32, 32)
    np.testing.assert_array_equal(full.labels, np.arange(60) % 7)
    assert full.num_classes == 100
    split = data.held_out_split(str(tmp_path / "c100"), seed=0, validation_examples=10)
    assert split.num_classes == 100 and split.resolution == 32


def test_image_folder_loads_files_lazily_with_sorted_class_labels(tmp_path: Path) -> None:
    full = data.load_training_set(str(write_image_folder(tmp_path / "tree")))
    assert isinstance(full.images, datasets.ImageFiles)
    assert len(full) == 18 and full.num_classes == 3
    np.testing.assert_array_equal(full.labels, np.repeat([0, 1, 2], 6))
    paths = paths_of(full)
    assert all(
        p.startswith(str(tmp_path / "tree" / ("ant", "bee", "cat")[label]))
        for p, label in zip(paths, full.labels, strict=True)
    )
    assert full.augment
    assert full.native_resolution == 20  # the median shorter side of each class's first
    gray = datasets.read_image(Path(next(p for p in paths if p.endswith(".pgm"))))
    assert gray.shape[0] == 1 and gray.dtype == np.uint8
    color = datasets.read_image(tmp_path / "tree" / "bee" / "3.npy")
    assert color.shape == (3, 32, 34)
    assert (color == 40 + 3).all()


def test_image_folder_batches_train_and_eval_views(tmp_path: Path) -> None:
    full = data.load_training_set(str(write_image_folder(tmp_path / "tree")))
    index = np.arange(len(full))
    eval_a = full.batch(index, 16)
    eval_b = full.batch(index, 16)
    assert eval_a.shape == (18, 3, 16, 16) and eval_a.dtype == torch.float32
    torch.testing.assert_close(eval_a, eval_b)
    gray_row = int(np.flatnonzero([p.endswith(".pgm") for p in paths_of(full)])[0])
    torch.testing.assert_close(
        eval_a[gray_row, 0] * full.std[0] + full.mean[0],
        eval_a[gray_row, 2] * full.std[2] + full.mean[2],
    )
    train_a = full.batch(index, 16, generator=torch.Generator().manual_seed(3))
    train_b = full.batch(index, 16, generator=torch.Generator().manual_seed(3))
    train_c = full.batch(index, 16, generator=torch.Generator().manual_seed(4))
    assert train_a.shape == (18, 3, 16, 16)
    torch.testing.assert_close(train_a, train_b)
    assert not torch.equal(train_a, train_c)
    assert not torch.equal(train_a, eval_a)
    # a constant image stays constant under any crop, flip and resize
    constant = int(np.flatnonzero([p.endswith("0.npy") for p in paths_of(full)])[0])
    torch.testing.assert_close(train_a[constant], eval_a[constant])


def test_netpbm_kinds_decode_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (3, 5))
    color = rng.integers(0, 256, (4, 2, 3))
    cases = {
        "p5.pgm": (ppm(gray), gray[None]),
        "p2.pgm": (ppm(gray, ascii_=True), gray[None]),
        "p6.ppm": (ppm(color), color.transpose(2, 0, 1)),
        "p3.pnm": (ppm(color, ascii_=True), color.transpose(2, 0, 1)),
        "wide.pgm": (ppm(gray * 257, maxval=65535), gray[None]),
        "four.pgm": (ppm(gray % 16, maxval=15), (gray % 16 * 255 + 7) // 15),
    }
    for name, (raw, expected) in cases.items():
        (tmp_path / name).write_bytes(raw)
        decoded = datasets.read_image(tmp_path / name)
        np.testing.assert_array_equal(decoded, np.asarray(expected).reshape(decoded.shape))
        assert datasets.image_shape(tmp_path / name) == decoded.shape
    np.save(tmp_path / "hw.npy", gray.astype(np.uint8))
    np.testing.assert_array_equal(datasets.read_image(tmp_path / "hw.npy"), gray[None])


# --- the held-out split ------------------------------------------------------------------------


def test_cifar_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    name = str(write_cifar10(tmp_path / "c10"))
    a = data.held_out_split(name, seed=5, validation_examples=30)
    b = data.held_out_split(name, seed=5, validation_examples=30)
    np.testing.assert_array_equal(pixels(a.validation), pixels(b.validation))
    np.testing.assert_array_equal(pixels(a.train), pixels(b.train))
    held, trained = ids_of(pixels(a.validation)), ids_of(pixels(a.train))
    assert len(held) == 30 and len(trained) == 70
    assert held.isdisjoint(trained) and held | trained == set(range(100))
    small = data.held_out_split(name, seed=5, validation_examples=30, train_examples=20)
    assert ids_of(pixels(small.validation)) == held
    assert ids_of(pixels(small.train)) <= trained
    assert (
        ids_of(pixels(data.held_out_split(name, seed=6, validation_examples=30).validation)) != held
    )


def test_image_folder_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    name = str(write_image_folder(tmp_path / "tree"))
    a = data.held_out_split(name, seed=2, validation_examples=6)
    b = data.held_out_split(name, seed=2, validation_examples=6)
    assert isinstance(a.train.images, datasets.ImageFiles)
    assert isinstance(a.validation.images, datasets.ImageFiles)
    assert isinstance(b.validation.images, datasets.ImageFiles)
    held = set(paths_of(a.validation))
    trained = set(paths_of(a.train))
    assert held == set(paths_of(b.validation))
    assert len(held) == 6 and len(trained) == 12 and held.isdisjoint(trained)
    assert a.train.augment and a.validation.augment  # only training batches draw crops
    assert a.resolution == 20 and a.num_classes == 3


def test_training_on_cifar_never_sees_held_out_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = str(write_cifar10(tmp_path / "c10", per_batch=40))
    config = TrainingConfig(
        dataset=name, validation_examples=50, batch_size=25, epochs=2, learning_rate=0.1
    )
    held = ids_of(pixels(data.held_out_split(name, seed=0, validation_examples=50).validation))
    seen: set[int] = set()
    shapes: set[tuple[int, ...]] = set()
    batch = data.ImageSet.batch

    def recording(self: data.ImageSet, index: Any, resolution: int, **kwargs: Any) -> Any:
        x = batch(self, index, resolution, **kwargs)
        if kwargs.get("generator") is not None:  # a training step
            seen.update(ids_of(pixels(self)[index]))
            shapes.add(tuple(x.shape))
        return x

    monkeypatch.setattr(data.ImageSet, "batch", recording)
    outcome = train(TINY, config=config, width=0.5)
    assert shapes == {(25, 3, 32, 32)}  # native resolution, 3 channels
    assert len(seen) == 150 and seen.isdisjoint(held)
    assert outcome.samples_seen == 2 * 6 * 25
    assert outcome.accuracy > 0.1  # chance; the green plane gives the class away


def test_training_on_an_image_folder_runs_end_to_end(tmp_path: Path) -> None:
    name = str(write_image_folder(tmp_path / "tree"))
    config = TrainingConfig(dataset=name, validation_examples=6, batch_size=4, steps=3)
    outcome = train(TINY, config=config, resolution=24, width=0.5)
    assert outcome.samples_seen == 12
    assert 0.0 <= outcome.accuracy <= 1.0


# --- describe_dataset ----------------------------------------------------------------------------


def test_describe_each_format(tmp_path: Path) -> None:
    cases = [
        ("fashion-mnist", "idx", 10, 60000, 28, 1),
        (str(write_idx(tmp_path / "idx")), "idx", 4, 12, 6, 1),
        (str(write_cifar10(tmp_path / "c10")), "cifar-10", 10, 100, 32, 3),
        (str(write_cifar100(tmp_path / "c100")), "cifar-100", 100, 60, 32, 3),
        (str(write_image_folder(tmp_path / "tree")), "imagefolder", 3, 18, 20, 3),
    ]
    for name, kind, classes, examples, resolution, channels in cases:
        assert datasets.describe_dataset(name) == datasets.DatasetInfo(
            name=name,
            format=kind,
            classes=classes,
            examples=examples,
            native_resolution=resolution,
            channels=channels,
        )


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def _malformed(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """Build one malformed data set; return its directory and the path the error names."""
    root = tmp_path / case
    if case == "missing":
        return root, root
    if case == "unknown-layout":
        root.mkdir()
        (root / "notes.txt").write_text("x")
        return root, root
    if case == "cifar-test-only":
        root.mkdir()
        dump(root / "test_batch", {b"data": numbered_rows(0, 2, 10)[0], b"labels": [0, 1]})
        return root, root
    if case in (
        "cifar-missing-batch",
        "cifar-bad-shape",
        "cifar-bad-labels",
        "cifar-evil",
        "cifar-bad-meta",
    ):
        write_cifar10(root)
        target = root / "data_batch_3"
        if case == "cifar-missing-batch":
            target.unlink()
            return root, root
        if case == "cifar-bad-shape":
            dump(target, {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4})
        elif case == "cifar-bad-labels":
            dump(target, {b"data": numbered_rows(0, 2, 10)[0], b"labels": [3, 10]})
        elif case == "cifar-evil":
            dump(target, {b"data": _Evil(), b"labels": [0]})
        else:
            target = root / "batches.meta"
            target.write_bytes(b"not a pickle")
        return root, target
    if case in ("idx-magic", "idx-truncated"):
        write_idx(root)
        target = root / f"{data.TRAIN_IMAGES}.gz"
        raw = idx_bytes(np.zeros((12, 6, 5), np.uint8))
        raw = b"\x01" + raw[1:] if case == "idx-magic" else raw[:-7]
        target.write_bytes(gzip.compress(raw))
        return root, target
    write_image_folder(root)
    if case == "folder-empty-class":
        (root / "dog").mkdir()
        return root, root / "dog"
    if case == "folder-png-only":
        (root / "dog").mkdir()
        (root / "dog" / "a.png").write_bytes(b"\x89PNG")
        return root, root / "dog"
    if case == "folder-float-npy":
        target = root / "ant" / "0.npy"
        np.save(target, np.zeros((4, 4), np.float32))
        return root, target
    assert case == "folder-bad-pgm"
    target = root / "ant" / "0.pgm"
    target.write_bytes(b"P5\n4 x\n255\n")
    (root / "ant" / "0.npy").unlink()
    return root, target


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "directory not found"),
        ("unknown-layout", "not a known data set layout"),
        ("cifar-test-only", r"no data_batch_1\.\.5 or train file \(expected CIFAR-10/100"),
        ("cifar-missing-batch", "no data_batch_3"),
        ("cifar-bad-shape", r"uint8 N x 3072 array, got uint8 \(4, 1024\)"),
        ("cifar-bad-labels", r"labels must be in \[0, 10\)"),
        ("cifar-evil", "refusing to load posix.system"),
        ("cifar-bad-meta", "not a CIFAR python pickle"),
        ("idx-magic", "bad IDX magic number"),
        ("idx-truncated", "header says shape"),
        ("folder-empty-class", "empty class folder"),
        ("folder-png-only", "need Pillow"),
        ("folder-float-npy", "expected a uint8 image, got float32"),
        ("folder-bad-pgm", "malformed PGM/PPM header"),
    ],
)
def test_describe_refuses_malformed_sets_naming_the_path(
    tmp_path: Path, case: str, match: str
) -> None:
    root, named = _malformed(tmp_path, case)
    with pytest.raises(ValueError, match=match) as info:
        datasets.describe_dataset(str(root))
    message = str(info.value)
    assert message.startswith("training.dataset: ")
    assert str(named) in message


def test_loading_refuses_what_describe_refuses(tmp_path: Path) -> None:
    root, named = _malformed(tmp_path, "cifar-bad-labels")
    with pytest.raises(ValueError, match=r"^dataset: .*labels must be in") as info:
        data.load_training_set(str(root))
    assert str(named) in str(info.value)


def test_describe_dataset_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, services.trainer.datasets as d; "
        "d.describe_dataset('fashion-mnist'); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

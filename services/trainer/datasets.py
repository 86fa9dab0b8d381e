"""On-disk training sets: tell a directory's format, describe it cheaply, decode it.

A spec's ``training.dataset`` is ``"fashion-mnist"`` (Debian's copy) or a directory, whose
contents say its format:

- ``idx``: ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]`` (MNIST's
  layout), uint8 grayscale images ``(N, H, W)``;
- ``cifar-10``: the published python pickles ``data_batch_1`` .. ``data_batch_5`` and
  ``batches.meta``; ``cifar-100``: ``train`` and ``meta`` (fine labels). Each batch holds
  ``N x 3072`` uint8 rows in channel-major order (1024 red, 1024 green, 1024 blue);
- ``imagefolder``: one folder per class (sorted names give the labels), holding image files
  at any depth: ``.npy`` (uint8, ``(H, W)`` or ``(H, W, C)`` with C 1 or 3) and netpbm
  ``.pgm``/``.ppm``/``.pnm`` (P2, P3, P5, P6; maxval up to 65535, scaled to 8 bits). PNG and
  JPEG are not read: that needs Pillow, which this project does not install.

Nothing here imports torch, so the controller can check a spec's data set with
:func:`describe_dataset` (headers only, no image decoding). Pickles are read by an
unpickler that admits numpy arrays and nothing else, so a data set path cannot run code.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import os
import pickle
import statistics
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

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

_logger = logging.getLogger(__name__)

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"

IDX = "idx"
CIFAR10 = "cifar-10"
CIFAR100 = "cifar-100"
IMAGE_FOLDER = "imagefolder"
FORMATS = (IDX, CIFAR10, CIFAR100, IMAGE_FOLDER)

IMAGE_SUFFIXES = (".npy", ".pgm", ".pnm", ".ppm")
_NEEDS_PILLOW = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_SIDE = 32
_CIFAR_ROW = 3 * _CIFAR_SIDE * _CIFAR_SIDE


@dataclass(frozen=True)
class _CifarLayout:
    files: tuple[str, ...]
    meta: str
    labels_key: bytes
    names_key: bytes


_CIFAR_LAYOUTS = {
    CIFAR10: _CifarLayout(_CIFAR_BATCHES, "batches.meta", b"labels", b"label_names"),
    CIFAR100: _CifarLayout(("train",), "meta", b"fine_labels", b"fine_label_names"),
}


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
class ImageFiles:
    """Image files decoded when a batch needs them; indexes like an array of images."""

    paths: np.ndarray  # of str

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def __getitem__(self, index: np.ndarray | slice) -> ImageFiles:
        return ImageFiles(self.paths[index])

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(C, H, W)``."""
        return read_image(Path(str(self.paths[i])))


@dataclass(frozen=True, eq=False)
class RawSet:
    """A training set as read from disk: in-memory uint8 images (``(N, H, W)`` grayscale or
    ``(N, C, H, W)``) or image files, int64 labels, and how many classes there are."""

    format: str
    images: np.ndarray | ImageFiles
    labels: np.ndarray
    classes: int
    native_resolution: int


# --- the directory and its format ---------------------------------------------------------


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
    try:
        with os.scandir(directory) as entries:
            listed = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    except OSError as err:
        raise DatasetError(f"{directory}: cannot list: {err.strerror or err}") from None
    files = {name for name, is_dir in listed if not is_dir}
    folders = [name for name, is_dir in listed if is_dir]
    if files & {TRAIN_IMAGES, f"{TRAIN_IMAGES}.gz", TRAIN_LABELS, f"{TRAIN_LABELS}.gz"}:
        return IDX
    if "batches.meta" in files or any(name.startswith("data_batch_") for name in files):
        return CIFAR10
    if files & {"train", "meta"}:
        return CIFAR100
    if files & {"test_batch", "test"}:
        raise DatasetError(
            f"{directory}: no data_batch_1..5 or train file (expected CIFAR-10/100 layout)"
        )
    if folders:
        return IMAGE_FOLDER
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
        kind = detect_format(directory)
        classes, examples, resolution, channels = _DESCRIBERS[kind](directory)
    except DatasetError as err:
        raise DatasetError(err.problem, "training.dataset") from None
    except OSError as err:
        raise DatasetError(_os_problem(err, dataset), "training.dataset") from None
    return DatasetInfo(
        name=dataset,
        format=kind,
        classes=classes,
        examples=examples,
        native_resolution=resolution,
        channels=channels,
    )


def load_raw(directory: Path) -> RawSet:
    """Read the training set in ``directory`` (image files stay on disk)."""
    kind = detect_format(directory)
    try:
        if kind == IDX:
            return _load_idx(directory)
        if kind == IMAGE_FOLDER:
            return _load_image_folder(directory)
        return _load_cifar(directory, kind)
    except OSError as err:
        raise DatasetError(_os_problem(err, str(directory))) from None


def _os_problem(err: OSError, fallback: str) -> str:
    return f"{err.filename or fallback}: cannot read: {err.strerror or err}"


# --- IDX -----------------------------------------------------------------------------------


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


def _describe_idx(directory: Path) -> tuple[int, int, int, int]:
    images_path = _find_idx(directory, TRAIN_IMAGES)
    labels_path = _find_idx(directory, TRAIN_LABELS)
    images = _idx_file_header(images_path)
    labels = read_idx(labels_path)
    _check_idx_pair(images_path, images, labels_path, (labels.dtype, labels.shape))
    n, height, width = images[1]
    return int(labels.max()) + 1, n, max(height, width), 1


def _load_idx(directory: Path) -> RawSet:
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


# --- CIFAR-10 and CIFAR-100 ------------------------------------------------------------------

# The only globals a CIFAR pickle may name: how numpy arrays and scalars and Python 2
# strings are rebuilt.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)
_NUMPY_CORE = "numpy._core." if importlib.util.find_spec("numpy._core") else "numpy.core."


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = _NUMPY_CORE + module.rsplit(".", 1)[1]
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as f:
            loaded = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    except Exception as err:  # a broken pickle raises about anything
        raise DatasetError(f"{path}: not a CIFAR python pickle: {err}") from None
    if not isinstance(loaded, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(loaded).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in loaded.items()}


def _cifar_classes(path: Path, key: bytes) -> int:
    meta = _read_pickle(path)
    names = meta.get(key)
    if not isinstance(names, list | tuple) or not names:
        raise DatasetError(f"{path}: no {key.decode()} list (the class names)")
    return len(names)


def _cifar_batch(path: Path, labels_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch: uint8 ``(N, 3072)`` rows and int64 labels in ``[0, classes)``."""
    batch = _read_pickle(path)
    rows = batch.get(b"data")
    if (
        not isinstance(rows, np.ndarray)
        or rows.dtype != np.uint8
        or rows.ndim != 2
        or (rows.shape[1] != _CIFAR_ROW)
    ):
        got = (
            f"{rows.dtype} {rows.shape}"
            if isinstance(rows, np.ndarray)
            else repr(type(rows).__name__)
        )
        raise DatasetError(f"{path}: 'data' must be a uint8 N x {_CIFAR_ROW} array, got {got}")
    raw_labels = batch.get(labels_key)
    if raw_labels is None:
        raise DatasetError(f"{path}: no {labels_key.decode()!r} list")
    try:
        labels = np.asarray(raw_labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{path}: {labels_key.decode()!r} are not integers: {err}") from None
    if labels.shape[0] != rows.shape[0]:
        raise DatasetError(
            f"{path}: {rows.shape[0]} images but {labels.shape[0]} {labels_key.decode()!r}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetError(
            f"{path}: labels must be in [0, {classes}) (the meta file names {classes} "
            f"classes), found {int(labels.min())}..{int(labels.max())}"
        )
    return rows, labels


def _read_cifar(directory: Path, kind: str) -> tuple[list[np.ndarray], np.ndarray, int]:
    layout = _CIFAR_LAYOUTS[kind]
    for name in (*layout.files, layout.meta):
        if not (directory / name).is_file():
            raise DatasetError(
                f"{directory}: no {name} (expected the {kind.upper()} python layout: "
                f"{', '.join(layout.files)} and {layout.meta})"
            )
    classes = _cifar_classes(directory / layout.meta, layout.names_key)
    rows, labels = [], []
    for name in layout.files:
        batch_rows, batch_labels = _cifar_batch(directory / name, layout.labels_key, classes)
        rows.append(batch_rows)
        labels.append(batch_labels)
    all_labels = np.concatenate(labels)
    if all_labels.size == 0:
        raise DatasetError(f"{directory}: no images in {', '.join(layout.files)}")
    return rows, all_labels, classes


def _describe_cifar(directory: Path, kind: str) -> tuple[int, int, int, int]:
    _, labels, classes = _read_cifar(directory, kind)
    return classes, int(labels.shape[0]), _CIFAR_SIDE, 3


def _load_cifar(directory: Path, kind: str) -> RawSet:
    rows, labels, classes = _read_cifar(directory, kind)
    images = np.concatenate(rows).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)
    return RawSet(
        format=kind, images=images, labels=labels, classes=classes, native_resolution=_CIFAR_SIDE
    )


# --- ImageFolder ---------------------------------------------------------------------------


def _scan_image_folder(directory: Path) -> tuple[list[list[str]], list[str]]:
    """Per class (sorted folder names), the sorted image paths; and the class names."""
    with os.scandir(directory) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    per_class: list[list[str]] = []
    for name in classes:
        found: list[str] = []
        skipped: set[str] = set()
        for root, dirs, files in os.walk(directory / name, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in sorted(files):
                suffix = Path(file).suffix.lower()
                if file.startswith("."):
                    continue
                if suffix in IMAGE_SUFFIXES:
                    found.append(os.path.join(root, file))
                else:
                    skipped.add(suffix or file)
        if not found:
            raise DatasetError(_empty_class_problem(directory / name, skipped))
        per_class.append(found)
    return per_class, classes


def _empty_class_problem(folder: Path, skipped: set[str]) -> str:
    problem = f"{folder}: empty class folder (no {', '.join(IMAGE_SUFFIXES)} image files"
    if skipped:
        problem += f"; found only {', '.join(sorted(skipped))}"
        if skipped & set(_NEEDS_PILLOW):
            problem += ", which need Pillow (not installed)"
    return problem + ")"


def _describe_image_folder(directory: Path) -> tuple[int, int, int, int]:
    per_class, _ = _scan_image_folder(directory)
    shapes = [image_shape(Path(paths[0])) for paths in per_class]
    resolution = int(statistics.median_low(min(h, w) for _, h, w in shapes))
    channels = max(c for c, _, _ in shapes)
    return len(per_class), sum(len(p) for p in per_class), resolution, channels


def _load_image_folder(directory: Path) -> RawSet:
    per_class, _ = _scan_image_folder(directory)
    shapes = [image_shape(Path(paths[0])) for paths in per_class]
    paths = np.array([p for class_paths in per_class for p in class_paths])
    labels = np.concatenate(
        [np.full(len(p), label, dtype=np.int64) for label, p in enumerate(per_class)]
    )
    return RawSet(
        format=IMAGE_FOLDER,
        images=ImageFiles(paths),
        labels=labels,
        classes=len(per_class),
        native_resolution=int(statistics.median_low(min(h, w) for _, h, w in shapes)),
    )


def image_shape(path: Path) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image file, from its header."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with path.open("rb") as f:
                shape, _ = _npy_header(f, path)
            return _npy_chw(shape, path)
        with path.open("rb") as f:
            head = f.read(_NETPBM_HEAD)
        try:
            channels, height, width, _, _ = _netpbm_header(head, path, complete=False)
        except _NeedMore:
            channels, height, width, _, _ = _netpbm_header(path.read_bytes(), path)
        return channels, height, width
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None


def read_image(path: Path) -> np.ndarray:
    """Decode one image file (see the module doc for the kinds) to uint8 ``(C, H, W)``."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            f"{path}: cannot decode {path.suffix or 'this'} files; "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"file not found: {path}") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    if path.suffix.lower() == ".npy":
        return _decode_npy(raw, path)
    return _decode_netpbm(raw, path)


def _npy_header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as err:
        raise DatasetError(f"{path}: not a .npy file: {err}") from None
    if dtype != np.uint8:
        raise DatasetError(f"{path}: expected a uint8 image, got {dtype}")
    return tuple(shape), dtype


def _npy_chw(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[2], shape[0], shape[1]
    raise DatasetError(f"{path}: expected an image of shape (H, W) or (H, W, 1|3), got {shape}")


def _decode_npy(raw: bytes, path: Path) -> np.ndarray:
    stream = io.BytesIO(raw)
    shape, _ = _npy_header(stream, path)
    channels, height, width = _npy_chw(shape, path)
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as err:
        raise DatasetError(f"{path}: cannot decode: {err}") from None
    if min(height, width) == 0:
        raise DatasetError(f"{path}: empty image of shape {shape}")
    return np.ascontiguousarray(array.reshape(height, width, channels).transpose(2, 0, 1))


# Netpbm: magic -> (channels, binary raster).
_NETPBM_KINDS = {b"P2": (1, False), b"P3": (3, False), b"P5": (1, True), b"P6": (3, True)}
_NETPBM_HEAD = 4096
_WHITESPACE = b" \t\r\n\v\f"


class _NeedMore(Exception):
    """The bytes read so far end inside the header."""


def _netpbm_header(
    raw: bytes, path: Path, *, complete: bool = True
) -> tuple[int, int, int, int, int]:
    """Channels, height, width, maxval and raster offset of a PGM/PPM file."""
    kind = _NETPBM_KINDS.get(raw[:2])
    if kind is None:
        raise DatasetError(
            f"{path}: not a PGM/PPM image (magic {raw[:2]!r}; expected P2, P3, P5 or P6)"
        )
    pos = 2
    fields: list[int] = []
    while len(fields) < 3:
        while pos < len(raw) and (raw[pos] in _WHITESPACE or raw[pos] == ord("#")):
            if raw[pos] == ord("#"):  # a comment runs to the end of its line
                end = raw.find(b"\n", pos)
                pos = len(raw) - 1 if end < 0 else end
            pos += 1
        start = pos
        while pos < len(raw) and 48 <= raw[pos] <= 57:
            pos += 1
        if pos == len(raw) and not complete:
            raise _NeedMore
        if start == pos:
            raise DatasetError(f"{path}: malformed PGM/PPM header (width, height, maxval)")
        fields.append(int(raw[start:pos]))
    if pos >= len(raw) or raw[pos] not in _WHITESPACE:
        if not complete:
            raise _NeedMore
        raise DatasetError(f"{path}: malformed PGM/PPM header (no whitespace after maxval)")
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise DatasetError(
            f"{path}: bad PGM/PPM header: width {width}, height {height}, maxval {maxval}"
        )
    return kind[0], height, width, maxval, pos + 1


def _decode_netpbm(raw: bytes, path: Path) -> np.ndarray:
    channels, height, width, maxval, offset = _netpbm_header(raw, path)
    count = channels * height * width
    if _NETPBM_KINDS[raw[:2]][1]:
        dtype = np.dtype(">u2" if maxval > 255 else "u1")
        if len(raw) - offset < count * dtype.itemsize:
            raise DatasetError(
                f"{path}: truncated raster: {width}x{height}x{channels} needs "
                f"{count * dtype.itemsize} bytes, file has {len(raw) - offset}"
            )
        values = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).astype(np.int64)
    else:
        try:
            values = np.array(raw[offset:].split()[:count], dtype=np.int64)
        except ValueError:
            raise DatasetError(f"{path}: non-numeric ASCII raster") from None
        if values.shape[0] < count:
            raise DatasetError(
                f"{path}: truncated raster: {count} values needed, found {values.shape[0]}"
            )
    if values.size and int(values.max()) > maxval:
        raise DatasetError(f"{path}: pixel value {int(values.max())} exceeds maxval {maxval}")
    if maxval != 255:
        values = (values * 255 + maxval // 2) // maxval
    image = values.astype(np.uint8).reshape(height, width, channels)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


_DESCRIBERS: dict[str, Callable[[Path], tuple[int, int, int, int]]] = {
    IDX: _describe_idx,
    CIFAR10: lambda directory: _describe_cifar(directory, CIFAR10),
    CIFAR100: lambda directory: _describe_cifar(directory, CIFAR100),
    IMAGE_FOLDER: _describe_image_folder,
}

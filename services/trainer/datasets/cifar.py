"""The CIFAR-10 and CIFAR-100 python layouts: pickled batches of ``N x 3072`` uint8 rows in
channel-major order (1024 red, 1024 green, 1024 blue) and a meta file naming the classes.

CIFAR-10 is ``data_batch_1`` .. ``data_batch_5`` and ``batches.meta``; CIFAR-100 ``train``
and ``meta`` (fine labels). Pickles are read by an unpickler that admits numpy arrays and
nothing else, so a data set path cannot run code.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.trainer.datasets.base import DatasetError, Format, RawSet, Summary

__all__ = ["CIFAR10", "CIFAR100", "FORMATS"]

CIFAR10 = "cifar-10"
CIFAR100 = "cifar-100"

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


def _describe_cifar(directory: Path, kind: str) -> Summary:
    _, labels, classes = _read_cifar(directory, kind)
    return classes, int(labels.shape[0]), _CIFAR_SIDE, 3


def _load_cifar(directory: Path, kind: str) -> RawSet:
    rows, labels, classes = _read_cifar(directory, kind)
    images = np.concatenate(rows).reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE)
    return RawSet(
        format=kind, images=images, labels=labels, classes=classes, native_resolution=_CIFAR_SIDE
    )


def _claims_cifar10(directory: Path, files: frozenset[str], folders: tuple[str, ...]) -> bool:
    return "batches.meta" in files or any(name.startswith("data_batch_") for name in files)


def _claims_cifar100(directory: Path, files: frozenset[str], folders: tuple[str, ...]) -> bool:
    """CIFAR-100's files; a CIFAR test split without its training files is an error (asked
    after CIFAR-10, so the test files of either are refused here)."""
    if files & {"train", "meta"}:
        return True
    if files & {"test_batch", "test"}:
        raise DatasetError(
            f"{directory}: no data_batch_1..5 or train file (expected CIFAR-10/100 layout)"
        )
    return False


FORMATS = (
    Format(
        CIFAR10,
        _claims_cifar10,
        lambda directory: _describe_cifar(directory, CIFAR10),
        lambda directory: _load_cifar(directory, CIFAR10),
    ),
    Format(
        CIFAR100,
        _claims_cifar100,
        lambda directory: _describe_cifar(directory, CIFAR100),
        lambda directory: _load_cifar(directory, CIFAR100),
    ),
)

"""The ImageFolder layout: one folder per class (sorted names give the labels), holding
image files (:mod:`services.trainer.datasets.images`) at any depth. PNG and JPEG are not
read: that needs Pillow, which this project does not install."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np

from services.trainer.datasets.base import DatasetError, Format, RawSet, Summary
from services.trainer.datasets.images import IMAGE_SUFFIXES, ImageFiles, image_shape

__all__ = ["FORMAT", "IMAGE_FOLDER"]

IMAGE_FOLDER = "imagefolder"

_NEEDS_PILLOW = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def _claims(directory: Path, files: frozenset[str], folders: tuple[str, ...]) -> bool:
    return bool(folders)


def _describe(directory: Path) -> Summary:
    per_class, _ = _scan_image_folder(directory)
    shapes = [image_shape(Path(paths[0])) for paths in per_class]
    resolution = int(statistics.median_low(min(h, w) for _, h, w in shapes))
    channels = max(c for c, _, _ in shapes)
    return len(per_class), sum(len(p) for p in per_class), resolution, channels


def _load(directory: Path) -> RawSet:
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


FORMAT = Format(IMAGE_FOLDER, _claims, _describe, _load)

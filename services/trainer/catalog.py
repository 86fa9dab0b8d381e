"""The data sets a trainer serves: names it knows and directories it can read.

A spec's ``training.dataset`` is a name or a directory. Names come from the trainer's
configuration (``--dataset NAME=DIR``, e.g. a volume mounted on every trainer pod) and the
built-in ``fashion-mnist`` (Debian's ``dataset-fashion-mnist``, when installed). The
controller asks its trainers what they serve (``Trainer.ListDatasets``) instead of reading
any disk itself, so data sets live only where the training happens.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from services.trainer.datasets import (
    FASHION_MNIST,
    FASHION_MNIST_DIR,
    DatasetError,
    DatasetInfo,
    describe_dataset,
)

__all__ = ["Catalog", "parse_dataset_flag"]

_logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def parse_dataset_flag(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (name, directory); ``ValueError`` says what is wrong."""
    name, sep, directory = text.partition("=")
    if not sep or not directory:
        raise ValueError(f"dataset: expected NAME=DIR, got {text!r}")
    if not _NAME.match(name):
        raise ValueError(
            f"dataset: name {name!r} must be 1-63 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name, Path(directory)


@dataclass(frozen=True)
class Catalog:
    """Named data sets (name -> directory); any other name is read as a directory."""

    named: Mapping[str, Path]

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, Path]]) -> Catalog:
        """The built-in ``fashion-mnist`` plus ``entries`` (a name given twice is an
        error; giving ``fashion-mnist`` replaces the built-in one)."""
        named: dict[str, Path] = {}
        for name, directory in entries:
            if name in named:
                raise ValueError(f"dataset: {name!r} given twice")
            named[name] = directory
        named.setdefault(FASHION_MNIST, FASHION_MNIST_DIR)
        return cls(named)

    def directory(self, name: str) -> str:
        """What the loader reads for ``name``: a configured directory, or ``name`` itself
        when it is a directory; ``DatasetError`` otherwise."""
        if not name:
            raise DatasetError("empty; give a data set's name or a directory", "training.dataset")
        path = self.named.get(name)
        if path is not None:
            return str(path)
        if not Path(name).is_dir():
            offered = ", ".join(sorted(self.named)) or "none"
            raise DatasetError(
                f"unknown data set {name!r}: neither a name this trainer serves ({offered}) "
                "nor a directory it can read",
                "training.dataset",
            )
        return name

    def describe(self, name: str) -> DatasetInfo:
        """``name``'s format, classes, size and resolution; ``DatasetError`` when this
        trainer cannot serve it."""
        return replace(describe_dataset(self.directory(name)), name=name)

    def offered(self) -> list[DatasetInfo]:
        """Every named data set that this trainer can read now, by name."""
        out: list[DatasetInfo] = []
        for name in sorted(self.named):
            try:
                out.append(self.describe(name))
            except (DatasetError, OSError) as err:
                level = logging.DEBUG if name == FASHION_MNIST else logging.WARNING
                _logger.log(level, "data set %r not served: %s", name, err)
        return out

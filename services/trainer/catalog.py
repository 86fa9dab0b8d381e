"""The data sets a trainer serves: names it knows and directories it can read.

A spec's ``training.dataset`` is a name or a directory. Names come from the trainer's
configuration (``--dataset NAME=DIR``, e.g. a volume mounted on every trainer pod) and the
built-in ``fashion-mnist`` (Debian's ``dataset-fashion-mnist``, when installed). A
directory is read only inside the trainer's data roots (``--data-root DIR``), after
symbolic links and ``..`` are resolved: a spec cannot make a trainer read the rest of its
disk. Without a data root, only names are served. The
controller asks its trainers what they serve (``Trainer.ListDatasets``) instead of reading
any disk itself, so data sets live only where the training happens.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.trainer.datasets import (
    FASHION_MNIST,
    FASHION_MNIST_DIR,
    DatasetError,
    DatasetInfo,
    describe_dataset,
)

__all__ = ["Catalog", "DatasetNotServed", "parse_dataset_flag"]

_logger = logging.getLogger(__name__)


class DatasetNotServed(DatasetError):
    """This trainer has no data set by that name (another trainer may have it)."""


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
    """Named data sets (name -> directory); any other name is read as a directory when it
    lies inside one of ``roots``.

    Descriptions are kept until their directory's modification time changes: describing
    reads every CIFAR batch or lists a whole ImageFolder tree, too slow for each request.
    """

    named: Mapping[str, Path]
    roots: tuple[Path, ...] = ()
    _known: dict[str, tuple[int, DatasetInfo]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _unreadable: set[str] = field(default_factory=set, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_entries(
        cls, entries: Iterable[tuple[str, Path]], roots: Iterable[Path] = ()
    ) -> Catalog:
        """The built-in ``fashion-mnist`` plus ``entries`` (a name given twice is an
        error; giving ``fashion-mnist`` replaces the built-in one); directories inside
        ``roots`` are served by path."""
        named: dict[str, Path] = {}
        for name, directory in entries:
            if name in named:
                raise ValueError(f"dataset: {name!r} given twice")
            named[name] = directory
        named.setdefault(FASHION_MNIST, FASHION_MNIST_DIR)
        return cls(named, tuple(Path(os.path.realpath(root)) for root in roots))

    def directory(self, name: str) -> str:
        """What the loader reads for ``name``: a configured directory, or ``name`` itself
        when it is a directory; ``DatasetError`` otherwise."""
        if not name:
            raise DatasetError("empty; give a data set's name or a directory", "training.dataset")
        path = self.named.get(name)
        if path is not None:
            return str(path)
        offered = ", ".join(sorted(self.named)) or "none"
        if not self.roots:
            raise DatasetNotServed(
                f"unknown data set {name!r}: not a name this trainer serves ({offered}); "
                "it reads no directory by path (no --data-root)",
                "training.dataset",
            )
        real = Path(os.path.realpath(name))
        if not Path(name).is_absolute() or not any(real.is_relative_to(r) for r in self.roots):
            roots = ", ".join(map(str, self.roots))
            raise DatasetNotServed(
                f"unknown data set {name!r}: neither a name this trainer serves ({offered}) "
                f"nor an absolute path inside its data roots ({roots})",
                "training.dataset",
            )
        if not real.is_dir():
            raise DatasetNotServed(
                f"unknown data set {name!r}: neither a name this trainer serves ({offered}) "
                "nor a directory it can read",
                "training.dataset",
            )
        return str(real)

    def describe(self, name: str) -> DatasetInfo:
        """``name``'s format, classes, size and resolution; ``DatasetError`` when this
        trainer cannot serve it."""
        directory = self.directory(name)
        try:
            stamp = os.stat(directory).st_mtime_ns
        except OSError as err:
            raise DatasetNotServed(f"{directory}: {err.strerror}", "training.dataset") from None
        with self._lock:
            known = self._known.get(directory)
        if known is None or known[0] != stamp:
            known = (stamp, describe_dataset(directory))
            with self._lock:
                self._known[directory] = known
        return replace(known[1], name=name)

    def offered(self) -> list[DatasetInfo]:
        """Every named data set that this trainer can read now, by name (one that cannot
        be read is logged once, until it can)."""
        out: list[DatasetInfo] = []
        for name in sorted(self.named):
            try:
                out.append(self.describe(name))
            except (DatasetError, OSError) as err:
                with self._lock:
                    first = name not in self._unreadable
                    self._unreadable.add(name)
                if first:
                    level = logging.DEBUG if name == FASHION_MNIST else logging.WARNING
                    _logger.log(level, "data set %r not served: %s", name, err)
                continue
            with self._lock:
                self._unreadable.discard(name)
        return out

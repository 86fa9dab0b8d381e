"""Imported by the trainer's fork server before it forks any training: decodes the data
sets named in ``MNAS_TRAINER_PRELOAD`` (comma-separated names or paths), so that every
training child starts with them decoded (shared copy-on-write) instead of reading and
decoding them again. Only NumPy work happens here: nothing that starts thread pools a
forked child could not use."""

from __future__ import annotations

import logging
import os

from services.trainer import data

__all__ = ["PRELOAD_ENV"]

PRELOAD_ENV = "MNAS_TRAINER_PRELOAD"

_logger = logging.getLogger(__name__)

for _name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
    try:
        data.load_training_set(_name)
    except (OSError, ValueError) as err:  # the trial that names it reports the problem
        _logger.warning("could not preload data set %r: %s", _name, err)

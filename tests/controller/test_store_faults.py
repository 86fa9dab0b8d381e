"""The store on a disk that refuses writes: a write waits for the disk and then lands
whole, or gives up after ``retry_seconds`` having written nothing.

The disk is real: a 2 MiB tmpfs mounted for the test (which needs the right to mount;
the test is skipped where the machine gives none), filled until SQLite reports
``database or disk is full``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from benchmarks.faults import CannotRun, fill_disk, small_disk
from services.controller.store import Store
from tests.controller.test_store import make_search, make_trial

WEIGHTS = bytes(1 << 20)  # more than the full disk has left


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with small_disk(tmp_path, "2m") as mount:
            yield mount
    except CannotRun as err:
        pytest.skip(str(err))


class _Seen(logging.Handler):
    """Sets ``event`` when a record holding ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@contextlib.contextmanager
def _watching(text: str) -> Iterator[threading.Event]:
    handler = _Seen(text)
    logger = logging.getLogger("services.controller.store")
    logger.addHandler(handler)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)


def test_a_write_on_a_full_disk_waits_for_room_and_lands_whole(disk: Path) -> None:
    store = Store.open(str(disk / "mnas.db"))
    try:
        search = make_search()
        store.create_search(search)
        filler = fill_disk(disk)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                store.save(search=search, trials=[make_trial()], weights={0: WEIGHTS})
            except BaseException as err:
                errors.append(err)

        with _watching("failed, again in") as retrying:
            writer = threading.Thread(target=write)
            writer.start()
            assert retrying.wait(timeout=60), "the write never failed on the full disk"
            assert store.get_trial(search.id, 0) is None  # nothing half written
            filler.unlink()  # the disk has room again
            writer.join(timeout=120)
        assert not writer.is_alive() and errors == []
        assert store.get_trial(search.id, 0) is not None
        assert store.load_weights(search.id, 0) == WEIGHTS
    finally:
        store.close()


def test_a_write_gives_up_after_its_retry_time_having_written_nothing(disk: Path) -> None:
    store = Store(f"sqlite:///{disk / 'mnas.db'}", retry_seconds=0.5)
    try:
        search = make_search()
        store.create_search(search)
        fill_disk(disk)
        with pytest.raises(OperationalError, match="full"):
            store.save(search=search, trials=[make_trial()], weights={0: WEIGHTS})
        assert store.get_trial(search.id, 0) is None
    finally:
        store.close()

"""The controller's store: searches and trials in SQLite (local) or PostgreSQL (cluster).

Records are the protobuf messages themselves, kept as JSON text, next to the few columns
that queries need (state, architecture id, reward, times; the tables are
:mod:`services.controller.store_tables`). The controller is the only
writer; a store opened again on the same database sees everything committed before.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit is durable as soon as it
returns against a crash or kill of the controller (what the resume guarantee needs), and
only a power loss or kernel crash can lose the last commits before a checkpoint; commits
then skip the fsync that otherwise took most of the controller's time per trial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import (
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateSchema
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

from mnas.v1.common_pb2 import LatencyStats, Search, SearchState, Trial, TrialState
from services.controller.json_cache import JsonCache
from services.controller.store_tables import Tables, define_tables
from services.latency.keys import measurement_key  # what measurements are recorded under

__all__ = ["AlreadyExistsError", "NotFoundError", "Store", "StoreError", "measurement_key"]

_logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=Message)

# How long an SQLite writer waits for another process's lock before giving up.
_SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
# Each SQLite connection's page cache. SQLite's default, 2 MiB, cannot hold a checkpoint
# of the PPO controller (1.3 MB) and the trials written between two of them: replacing the
# checkpoint then reads the old one's pages back from the file to free them, which made
# the write take 2.2 ms instead of 0.8 ms. Allocated as used.
SQLITE_CACHE_KIB = 16384


class StoreError(Exception):
    """A store operation that cannot be done as asked."""

    def __str__(self) -> str:
        # KeyError quotes its message; these are sentences, not keys.
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(StoreError, KeyError):
    """A search with that id already exists."""


class NotFoundError(StoreError, KeyError):
    """The search a write refers to does not exist."""


class _Statements(NamedTuple):
    """The statements of the controller's per-trial path, built once: building one from
    literal values costs more than running it (it is compiled, and its cache key made,
    again each time)."""

    upsert_trial: Executable
    update_search: Executable
    find_measurement: Executable
    insert_measurement: Executable
    upsert_strategy_state: Executable
    upsert_weights: Executable

    @classmethod
    def build(cls, tables: Tables, backend: str) -> _Statements:
        insert = sqlite_dialect.insert if backend == "sqlite" else pg_dialect.insert

        def upsert(table: Table, keys: Sequence[str]) -> Executable:
            statement = insert(table)
            replaced = [column.name for column in table.columns if column.name not in keys]
            return statement.on_conflict_do_update(
                index_elements=[table.c[key] for key in keys],
                set_={name: statement.excluded[name] for name in replaced},
            )

        searches = tables.searches
        measurements = tables.measurements
        return cls(
            upsert_trial=upsert(tables.trials, ["search_id", "number"]),
            update_search=update(searches)
            .where(searches.c.id == bindparam("search_id"))
            .values(
                name=bindparam("name"),
                state=bindparam("state"),
                updated_at=bindparam("updated_at"),
                search_json=bindparam("search_json"),
            ),
            find_measurement=select(measurements.c.stats_json).where(
                measurements.c.key == bindparam("key")
            ),
            insert_measurement=insert(measurements).on_conflict_do_nothing(
                index_elements=[measurements.c.key]
            ),
            upsert_strategy_state=upsert(tables.strategy_states, ["search_id"]),
            upsert_weights=upsert(tables.weights, ["search_id", "number"]),
        )


_JSON_OPTIONS: dict[str, Any] = {"preserving_proto_field_name": True}


def _to_json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None, **_JSON_OPTIONS)


# Unknown fields come from a newer controller; reading them must not fail.
_PARSED = JsonCache()


def _from_json(text: str, message: _M) -> _M:
    return _PARSED.parse(text, message)


def _now() -> datetime:
    return datetime.now(UTC)


def _normalize_url(url: str | URL) -> URL:
    """The URL with PostgreSQL mapped onto the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


class Store:
    """Searches and trials of the controller, safe to call from several threads.

    `url` is an SQLAlchemy URL: `sqlite:///path/to/mnas.db` or
    `postgresql+psycopg://user@host/db` (`postgresql://` means the same). Tables are
    created when missing; `schema` puts them in that PostgreSQL schema (created too).
    """

    def __init__(
        self,
        url: str | URL,
        *,
        schema: str | None = None,
        echo: bool = False,
        retry_seconds: float = 120.0,
    ) -> None:
        parsed = _normalize_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported store backend {backend!r}: use sqlite or postgresql")
        if schema is not None and backend != "postgresql":
            raise ValueError("a schema is only supported with PostgreSQL")
        self.retry_seconds = retry_seconds
        tables = define_tables(schema)
        self._metadata = tables.metadata
        self._searches, self._trials = tables.searches, tables.trials
        self._strategy_states = tables.strategy_states
        self._weights = tables.weights
        self._measurements = tables.measurements
        # Writers wait for each other here rather than in SQLite's busy loop; PostgreSQL
        # takes concurrent writers as they come.
        self._write_guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._read_guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._statements = _Statements.build(tables, backend)
        # The keys of the recorded measurements, read at the first lookup and kept up to
        # date by save(): most lookups are for networks never measured, and those need no
        # query. Another writer's measurement is missed until the store is opened again,
        # which costs a measurement, never a wrong figure.
        self._measurement_keys: set[str] | None = None
        self._keys_lock = threading.Lock()
        # Each running search's spec as JSON-ready values, with the bytes they were made
        # from: a search is written at every trial's end, and its spec, which never
        # changes, is most of its JSON.
        self._spec_values: dict[str, tuple[bytes, dict[str, Any]]] = {}
        if backend == "sqlite":
            self._engine = self._sqlite_engine(parsed, echo=echo)
            lock = threading.Lock()
            self._write_guard = lock
            if _is_memory_sqlite(parsed):
                # One shared connection: readers must take turns with writers too.
                self._read_guard = lock
        else:
            self._engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
        with self._engine.begin() as conn:
            if schema is not None and not inspect(conn).has_schema(schema):
                conn.execute(CreateSchema(schema, if_not_exists=True))
            self._metadata.create_all(conn)
        _logger.info("store opened: %s", parsed.render_as_string(hide_password=True))

    @classmethod
    def open(cls, url_or_path: str) -> Store:
        """A store at a URL, or at an SQLite file when given a filesystem path."""
        if "://" in url_or_path:
            return cls(url_or_path)
        path = Path(url_or_path).expanduser().resolve()
        return cls(URL.create("sqlite", database=str(path)))

    @staticmethod
    def _sqlite_engine(url: URL, *, echo: bool) -> Engine:
        """An SQLite engine in WAL mode whose write transactions begin IMMEDIATE."""
        if _is_memory_sqlite(url):
            engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
            )
        else:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                echo=echo,
                connect_args={
                    "check_same_thread": False,
                    "timeout": _SQLITE_BUSY_TIMEOUT_SECONDS,
                },
            )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # A writer takes the write lock up front, so it never fails to upgrade later.
            writes = conn.get_execution_options().get("mnas_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

        return engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed on success, else rolled back."""
        with self._write_guard, self._engine.connect() as conn:
            conn.execution_options(mnas_write=True)
            with conn.begin():
                yield conn

    def _transact(self, what: str, body: Callable[[Connection], None]) -> None:
        """Run ``body`` in a write transaction; when the database cannot take it for now
        (``OperationalError``: PostgreSQL restarting or the connection lost, SQLite's disk
        full or busy), roll it back and run it again, backing off, for up to
        ``retry_seconds`` in all, then raise. A write is never half done: each attempt
        commits all of ``body`` or nothing."""
        deadline = time.monotonic() + self.retry_seconds
        pause = 0.1
        while True:
            try:
                with self._write() as conn:
                    body(conn)
                return
            except OperationalError as err:
                if time.monotonic() + pause > deadline:
                    raise
                _logger.warning(
                    "store: %s failed, again in %.1f s: %s", what, pause, _first_line(err)
                )
                time.sleep(pause)  # backing off while the database recovers
                pause = min(pause * 2, 5.0)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection in a read transaction (one snapshot for all its queries)."""
        with self._read_guard, self._engine.connect() as conn, conn.begin():
            yield conn

    # Searches.

    def create_search(self, search: Search) -> None:
        """Insert a new search; AlreadyExistsError if its id is taken."""
        now = _now()
        created = search.created_at.ToDatetime(tzinfo=UTC) if search.HasField("created_at") else now
        try:
            with self._write() as conn:
                conn.execute(
                    self._searches.insert().values(
                        id=search.id,
                        name=search.spec.name,
                        state=int(search.state),
                        created_at=created,
                        updated_at=now,
                        search_json=self._search_json(search),
                    )
                )
        except IntegrityError as err:
            raise AlreadyExistsError(f"search {search.id!r} already exists") from err

    def save_search(self, search: Search) -> None:
        """Update an existing search; NotFoundError if there is none with its id."""
        self._transact("saving a search", lambda conn: self._update_search(conn, search))

    def get_search(self, search_id: str) -> Search | None:
        """The search with that id, or None."""
        with self._read() as conn:
            text = conn.execute(
                select(self._searches.c.search_json).where(self._searches.c.id == search_id)
            ).scalar_one_or_none()
        return None if text is None else _from_json(text, Search())

    def list_searches(self) -> list[Search]:
        """All searches, newest first."""
        columns = self._searches.c
        with self._read() as conn:
            texts = conn.execute(
                select(columns.search_json).order_by(columns.created_at.desc(), columns.id.desc())
            ).scalars()
            return [_from_json(text, Search()) for text in texts]

    # Trials.

    def save_trial(self, trial: Trial) -> None:
        """Insert or update a trial by (search id, number); NotFoundError without the search."""
        self._transact("saving a trial", lambda conn: self._upsert_trials(conn, [trial]))

    def get_trial(self, search_id: str, number: int) -> Trial | None:
        """The trial with that number in that search, or None."""
        columns = self._trials.c
        with self._read() as conn:
            text = conn.execute(
                select(columns.trial_json).where(
                    columns.search_id == search_id, columns.number == number
                )
            ).scalar_one_or_none()
        return None if text is None else _from_json(text, Trial())

    def list_trials(
        self,
        search_id: str,
        *,
        after: int = -1,
        limit: int = 100,
        states: Collection[int] | None = None,
    ) -> list[Trial]:
        """Up to `limit` trials numbered above `after`, ascending, in `states` if given."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        columns = self._trials.c
        query = (
            select(columns.trial_json)
            .where(*self._trial_filter(search_id, states), columns.number > after)
            .order_by(columns.number)
            .limit(limit)
        )
        with self._read() as conn:
            return [_from_json(text, Trial()) for text in conn.execute(query).scalars()]

    def count_trials(self, search_id: str, states: Collection[int] | None = None) -> int:
        """How many trials the search has, in `states` if given."""
        query = (
            select(func.count())
            .select_from(self._trials)
            .where(*self._trial_filter(search_id, states))
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def find_completed_by_arch(self, search_id: str, arch_id: str) -> Trial | None:
        """The earliest completed trial of the search with that architecture id, or None."""
        columns = self._trials.c
        query = (
            select(columns.trial_json)
            .where(
                columns.search_id == search_id,
                columns.arch_id == arch_id,
                columns.state == TrialState.TRIAL_STATE_COMPLETED,
            )
            .order_by(columns.number)
            .limit(1)
        )
        with self._read() as conn:
            text = conn.execute(query).scalar_one_or_none()
        return None if text is None else _from_json(text, Trial())

    # Several records at once.

    def save(
        self,
        *,
        search: Search | None = None,
        trials: Sequence[Trial] = (),
        weights: Mapping[int, bytes] | None = None,
        drop_weights: Collection[int] = (),
        measurements: Mapping[str, LatencyStats] | None = None,
        strategy_state: bytes | None = None,
    ) -> None:
        """Update the search (which must exist), upsert the trials, keep the trained
        ``weights`` of trials (by number, of ``search``) and drop those of
        ``drop_weights``, record latency ``measurements`` (by :func:`measurement_key`)
        and checkpoint the search's strategy (``strategy_state``), all or nothing."""
        if (weights or drop_weights or strategy_state is not None) and search is None:
            raise ValueError("weights, strategy_state: saving them needs the search")

        def body(conn: Connection) -> None:
            if search is not None:
                self._update_search(conn, search)
            if search is not None and strategy_state is not None:
                conn.execute(
                    self._statements.upsert_strategy_state,
                    {"search_id": search.id, "state": strategy_state, "updated_at": _now()},
                )
            self._upsert_trials(conn, trials)
            if search is not None and drop_weights:
                columns = self._weights.c
                conn.execute(
                    delete(self._weights).where(
                        columns.search_id == search.id, columns.number.in_(list(drop_weights))
                    )
                )
            if measurements:
                with self._keys_lock:
                    if self._measurement_keys is not None:
                        self._measurement_keys.update(measurements)
                now = _now()
                conn.execute(
                    self._statements.insert_measurement,
                    [
                        {
                            "key": key,
                            "arch_id": key.split("|", 1)[0],
                            "device_class": stats.device_class,
                            "created_at": now,
                            "stats_json": _to_json(stats),
                        }
                        for key, stats in measurements.items()
                    ],
                )
            for number, data in (weights or {}).items():
                assert search is not None
                conn.execute(
                    self._statements.upsert_weights,
                    {"search_id": search.id, "number": number, "data": data, "updated_at": _now()},
                )

        self._transact("saving a search's progress", body)

    def find_measurement(self, key: str) -> LatencyStats | None:
        """The latency recorded under ``key`` (:func:`measurement_key`), or None."""
        with self._keys_lock:
            if self._measurement_keys is None:
                with self._read() as conn:
                    keys = conn.execute(select(self._measurements.c.key)).scalars()
                    self._measurement_keys = set(keys)
            if key not in self._measurement_keys:
                return None
        with self._read() as conn:
            text = conn.execute(
                self._statements.find_measurement, {"key": key}
            ).scalar_one_or_none()
        return None if text is None else _from_json(text, LatencyStats())

    def load_weights(self, search_id: str, number: int) -> bytes | None:
        """The trained weights kept for that trial (``torch.save`` bytes), or None."""
        columns = self._weights.c
        with self._read() as conn:
            data = conn.execute(
                select(columns.data).where(columns.search_id == search_id, columns.number == number)
            ).scalar_one_or_none()
        return None if data is None else bytes(data)

    def save_strategy_state(
        self, search_id: str, state: bytes, *, trials: Sequence[Trial] = ()
    ) -> None:
        """Checkpoint the search's strategy together with those trials, all or nothing."""
        values = {"search_id": search_id, "state": state, "updated_at": _now()}
        try:
            with self._write() as conn:
                conn.execute(self._statements.upsert_strategy_state, values)
                self._upsert_trials(conn, trials)
        except IntegrityError as err:
            raise NotFoundError(f"search {search_id!r} not found") from err

    def load_strategy_state(self, search_id: str) -> bytes | None:
        """The last strategy checkpoint of the search; None without one (or without the search)."""
        columns = self._strategy_states.c
        with self._read() as conn:
            state = conn.execute(
                select(columns.state).where(columns.search_id == search_id)
            ).scalar_one_or_none()
        return None if state is None else bytes(state)

    def close(self) -> None:
        """Release the database connections; the store is unusable afterwards."""
        self._engine.dispose()

    # Helpers, inside a write transaction.

    def _update_search(self, conn: Connection, search: Search) -> None:
        result = conn.execute(
            self._statements.update_search,
            {
                "search_id": search.id,
                "name": search.spec.name,
                "state": int(search.state),
                "updated_at": _now(),
                "search_json": self._search_json(search),
            },
        )
        if result.rowcount == 0:
            raise NotFoundError(f"search {search.id!r} not found")

    def _search_json(self, search: Search) -> str:
        """``search`` as :func:`_to_json` writes it (the same values; the spec's key comes
        last), the spec's part encoded once while the search runs."""
        if not search.HasField("spec"):
            return _to_json(search)
        spec = search.spec.SerializeToString(deterministic=True)
        cached = self._spec_values.get(search.id)
        if cached is None or cached[0] != spec:
            cached = (spec, json_format.MessageToDict(search.spec, **_JSON_OPTIONS))
        if search.state == SearchState.SEARCH_STATE_RUNNING:
            self._spec_values[search.id] = cached
        else:  # written again rarely, if ever
            self._spec_values.pop(search.id, None)
        rest = Search()
        rest.CopyFrom(search)
        rest.ClearField("spec")
        values = json_format.MessageToDict(rest, **_JSON_OPTIONS)
        values["spec"] = cached[1]
        return json.dumps(values)

    def _upsert_trials(self, conn: Connection, trials: Sequence[Trial]) -> None:
        now = _now()
        by_search: dict[str, list[dict[str, Any]]] = {}
        for trial in trials:
            completed = trial.state == TrialState.TRIAL_STATE_COMPLETED
            by_search.setdefault(trial.search_id, []).append(
                {
                    "search_id": trial.search_id,
                    "number": trial.number,
                    "state": int(trial.state),
                    "arch_id": trial.architecture.id,
                    # A reward means something only once the trial completed.
                    "reward": trial.reward if completed else None,
                    "updated_at": now,
                    "trial_json": _to_json(trial),
                }
            )
        for search_id, rows in by_search.items():
            try:
                conn.execute(self._statements.upsert_trial, rows[0] if len(rows) == 1 else rows)
            except IntegrityError as err:
                # The primary key is handled by the upsert; what is left is the search.
                numbers = ", ".join(str(row["number"]) for row in rows)
                raise NotFoundError(f"search {search_id!r} of trial {numbers} not found") from err

    def _trial_filter(
        self, search_id: str, states: Collection[int] | None
    ) -> list[ColumnElement[bool]]:
        columns = self._trials.c
        conditions: list[ColumnElement[bool]] = [columns.search_id == search_id]
        if states is not None:
            conditions.append(columns.state.in_([int(state) for state in states]))
        return conditions


def _first_line(err: BaseException) -> str:
    """The database's own message, first line (SQLAlchemy appends the SQL and a link)."""
    origin = getattr(err, "orig", None) or err
    return str(origin).strip().splitlines()[0] if str(origin).strip() else type(err).__name__

"""Store backends for the controller tests: SQLite in a temp dir, PostgreSQL in a fresh schema.

The PostgreSQL tests fail, not skip, when the server is unreachable, unless
MNAS_TEST_SKIP_POSTGRES=1; MNAS_TEST_POSTGRES_URL points them at another server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateSchema, DropSchema

from services.controller.store import Store

POSTGRES_URL = os.environ.get(
    "MNAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCHEMA_PREFIX = "mnas_test_"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """PPO's small products run on one thread, as in the controller (many threads stall
    on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def connect_postgres(url: str) -> Engine:
    """An engine on a reachable PostgreSQL; fails the test (or skips, if asked) otherwise."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return engine
    except OperationalError as err:
        engine.dispose()
        reason = f"PostgreSQL at {url} is not reachable: {err.orig or err}".strip()
    # Outside the except block, so that the report is this sentence, not a traceback chain.
    if os.environ.get("MNAS_TEST_SKIP_POSTGRES") == "1":
        pytest.skip(f"{reason} (MNAS_TEST_SKIP_POSTGRES=1)")
    pytest.fail(
        f"{reason}\nStart it (trust auth, database 'test') or set "
        "MNAS_TEST_SKIP_POSTGRES=1 to skip the PostgreSQL store tests.",
        pytrace=False,
    )


def schema_exists(admin: Engine, name: str) -> bool:
    with admin.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"), {"name": name}
        ).scalar_one()
    return bool(found)


@contextlib.contextmanager
def postgres_schema(admin: Engine) -> Iterator[str]:
    """A fresh schema with a random name, dropped with everything in it afterwards."""
    name = SCHEMA_PREFIX + secrets.token_hex(8)
    with admin.begin() as conn:
        conn.execute(CreateSchema(name))
    try:
        yield name
    finally:
        with admin.begin() as conn:
            conn.execute(DropSchema(name, cascade=True, if_exists=True))


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An engine on the test PostgreSQL, checked reachable once per session."""
    engine = connect_postgres(POSTGRES_URL)
    yield engine
    engine.dispose()


@dataclass
class Backend:
    """Where a test's store lives; `open` gives another store on the same data."""

    name: str
    url: str
    schema: str | None = None
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = Store(self.url, schema=self.schema)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store backend in turn, isolated to this test."""
    if request.param == "sqlite":
        sqlite = Backend("sqlite", f"sqlite:///{tmp_path / 'mnas.db'}")
        yield sqlite
        sqlite.close_all()
        return
    admin: Engine = request.getfixturevalue("postgres_admin")
    with postgres_schema(admin) as schema:
        postgres = Backend("postgresql", POSTGRES_URL, schema=schema)
        try:
            yield postgres
        finally:
            postgres.close_all()
    assert not schema_exists(admin, schema), f"schema {schema} left behind"


@pytest.fixture
def store(backend: Backend) -> Store:
    """A store on a fresh, empty database."""
    return backend.open()

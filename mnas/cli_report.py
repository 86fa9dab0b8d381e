"""``mnas report``: a search's HTML report, read from a running controller (``--target``)
or straight from a store file or database URL (``--store``, no controller needed)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mnas.cli_args import DEFAULT_TARGET, TARGET_ENV, add_connection_arguments, connection_from_args
from mnas.client import Client, SearchNotFound
from mnas.errors import UsageError
from mnas.report import render_report
from mnas.report_plots import require_matplotlib
from mnas.tls import ClientTLS
from mnas.v1 import common_pb2

__all__ = [
    "add_commands",
    "check_output",
    "read_from_controller",
    "read_from_store",
    "write_report",
]

STDOUT = "-"
_PAGE = 500


def read_from_controller(
    target: str, search_id: str, *, tls: ClientTLS | None = None, token: str | None = None
) -> tuple[common_pb2.Search, list[common_pb2.Trial]]:
    """The search and all its trials, from the controller at ``target``."""
    with Client(target, tls=tls, token=token) as client:
        search = client.search(search_id)
        return search.proto, [t.proto for t in search.trials(page_size=_PAGE)]


def read_from_store(
    url_or_path: str, search_id: str
) -> tuple[common_pb2.Search, list[common_pb2.Trial]]:
    """The search and all its trials, read from the controller's store.

    A path must name an existing SQLite file (opening one creates it otherwise).
    """
    try:
        from sqlalchemy.exc import SQLAlchemyError

        from services.controller.store import Store
    except ImportError as err:
        raise UsageError(
            f"--store needs the controller extra (pip install 'mnas[controller]'): {err}"
        ) from None
    if "://" not in url_or_path and not Path(url_or_path).is_file():
        raise UsageError(f"--store: no store file {url_or_path}")
    try:
        if not _holds_a_store(url_or_path):  # opening a store would create its tables
            raise UsageError(f"--store: {url_or_path} holds no mnas store (no searches table)")
        store = Store.open(url_or_path)
        try:
            search = store.get_search(search_id)
            if search is None:
                raise SearchNotFound(f"no search {search_id!r} in {url_or_path}")
            trials: list[common_pb2.Trial] = []
            while page := store.list_trials(
                search_id, after=trials[-1].number if trials else -1, limit=_PAGE
            ):
                trials.extend(page)
        finally:
            store.close()
    except SQLAlchemyError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--store: cannot read {url_or_path}: {first}") from None
    return search, trials


def _holds_a_store(url_or_path: str) -> bool:
    """Whether the database has the store's tables, looked at without writing to it."""
    if "://" not in url_or_path:
        import sqlite3

        uri = Path(url_or_path).resolve().as_uri() + "?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                found = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'searches'"
                ).fetchone()
        except sqlite3.DatabaseError as err:
            raise UsageError(f"--store: cannot read {url_or_path}: {err}") from None
        return found is not None
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url_or_path)
    try:
        return bool(inspect(engine).has_table("searches"))
    finally:
        engine.dispose()


def check_output(output: str) -> None:
    """Fail now, before any work, when the report could not be written to ``output``."""
    require_matplotlib()
    if output == STDOUT:
        return
    parent = Path(output).parent
    if not parent.is_dir():
        raise UsageError(f"cannot write the report to {output}: no directory {parent}")
    if Path(output).is_dir():
        raise UsageError(f"cannot write the report to {output}: it is a directory")


def write_report(
    search: common_pb2.Search, trials: list[common_pb2.Trial], output: str, *, top: int
) -> str | None:
    """Render the report and write it to ``output`` (``-``: standard output).

    A file appears whole or not at all. Returns a line to tell the user, or None when the
    page went to standard output.
    """
    text = render_report(search, trials, top=top, generated=datetime.now(UTC))
    if output == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(output)
    partial: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as f:
            partial = Path(f.name)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        partial = None
    except OSError as err:
        raise UsageError(f"cannot write the report to {output}: {err.strerror or err}") from None
    finally:
        if partial is not None:  # whatever stopped us (an error, Ctrl-C): no half file
            partial.unlink(missing_ok=True)
    return f"wrote the report of search {search.id} ({len(trials)} trials) to {path}"


def _cmd_report(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise UsageError(f"--top: must not be negative, got {args.top}")
    output = args.output or f"{args.search_id}.html"
    check_output(output)
    if args.store:
        search, trials = read_from_store(args.store, args.search_id)
    else:
        target = args.target or os.environ.get(TARGET_ENV, DEFAULT_TARGET)
        tls, token = connection_from_args(args)
        search, trials = read_from_controller(target, args.search_id, tls=tls, token=token)
    line = write_report(search, trials, output, top=args.top)
    if line:
        print(line)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``report`` to the ``mnas`` parser."""
    report = commands.add_parser(
        "report",
        help="write a search's report: one HTML file with its Pareto front, reward and "
        "latency plots and best trials",
    )
    report.add_argument("search_id")
    report.add_argument(
        "-o",
        "--output",
        default=None,
        help="HTML file to write, '-' for standard output (default SEARCH_ID.html)",
    )
    report.add_argument("--top", type=int, default=10, help="best trials listed (default 10)")
    source = report.add_mutually_exclusive_group()
    source.add_argument(
        "--store",
        default=None,
        help="read the controller's store directly: SQLite file or database URL",
    )
    source.add_argument(
        "--target",
        default=None,
        help=f"controller address (env {TARGET_ENV}, default {DEFAULT_TARGET})",
    )
    add_connection_arguments(report)
    report.set_defaults(run=_cmd_report)

"""The search commands of the ``mnas`` CLI: submit, watch, list, trials, best, weights,
cancel, up, and ``search`` (start the local services, run a spec, print the results)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from mnas.cli_args import add_connection_arguments, connection_from_args
from mnas.cli_output import results_console
from mnas.client import Client, Search
from mnas.cost import count
from mnas.errors import UsageError
from mnas.local import LocalStack, port_is_free
from mnas.report import reference_summary
from mnas.results import EventKind, SearchInfo, SearchState, Trial, TrialState
from mnas.specfile import load_spec
from mnas.v1 import common_pb2

__all__ = ["add_commands"]

DEFAULT_TARGET = "127.0.0.1:50051"


def _f4(value: float | None) -> str:
    return f"{value or 0.0:.4f}"


def _ms(trial: Trial) -> str:
    return f"{(trial.latency_seconds or 0.0) * 1e3:.3f}"


# --- rendering -------------------------------------------------------------------------


def _print_trials(
    console: Console, title: str, trials: list[Trial], spec: common_pb2.SearchSpec
) -> None:
    """Scores and costs (at the deployment resolution), then each architecture in full."""
    table = Table(title=title)
    for column in ("#", "reward", "accuracy", "latency (ms)", "params", "MACs"):
        table.add_column(column, justify="right", no_wrap=True)
    lines = []
    for trial in trials:
        arch = trial.arch()
        cost = count(
            arch,
            width=spec.space.width or 1.0,
            resolution=spec.latency.resolution or spec.space.resolution or 224,
            num_classes=spec.space.num_classes or 1000,
        )
        table.add_row(
            str(trial.number),
            _f4(trial.reward),
            _f4(trial.accuracy),
            _ms(trial),
            f"{cost.params / 1e6:.2f}M",
            f"{cost.macs / 1e6:.1f}M",
        )
        lines.append(f"#{trial.number}: {trial.blocks}")
    console.print(table)
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _print_results(console: Console, search: Search, k: int) -> None:
    info = search.refresh()
    console.print(
        f"search {info.id} {info.state}: {info.trials_completed} completed, "
        f"{info.trials_stopped} stopped early, {info.trials_failed} failed"
        + (f" ({info.error})" if info.error else "")
    )
    reference = reference_summary(info.proto)
    if reference is not None:
        console.print(f"reference {reference}", soft_wrap=True, highlight=False)
    best = search.best(k)
    if best:
        _print_trials(console, f"best {len(best)} by reward", best, info.spec)
        _print_trials(console, "Pareto front: accuracy vs latency", search.pareto(), info.spec)


def _follow(console: Console, search: Search) -> SearchInfo:
    """Show a progress bar until the search finishes."""
    total = search.info.max_trials
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[rate]} trials/h"),
        TextColumn("{task.fields[running]} running"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"search {search.id}", total=total, best="-", rate="-", running=0)
        for event in search.watch():
            info = event.search
            done = info.trials_completed + info.trials_stopped + info.trials_failed
            hours = (time.monotonic() - started) / 3600
            rate = f"{done / hours:.0f}" if done and hours > 0 else "-"
            best = _f4(info.best_reward) if info.best_reward is not None else "-"
            progress.update(
                task,
                completed=info.trials_completed + info.trials_stopped,
                best=best,
                rate=rate,
                running=info.trials_running,
            )
            trial = event.trial
            if event.kind is EventKind.TRIAL_FINISHED and trial is not None and trial.error:
                progress.console.print(f"trial {trial.number} {trial.state}: {trial.error}")
    return search.refresh()


# --- commands --------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    tls, token = connection_from_args(args)
    return Client(args.target, tls=tls, token=token)


def _cmd_submit(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _client(args) as client:
        search = client.submit(spec)
    print(search.id)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    console = results_console()
    with _client(args) as client:
        search = client.search(args.search_id)
        final = _follow(console, search)
        _print_results(console, search, args.top)
    return 0 if final.state is SearchState.SUCCEEDED else 1


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        searches = client.searches()
    owners = any(s.owner for s in searches)  # a controller that checks tokens
    table = Table()
    table.add_column("id", no_wrap=True, min_width=16)  # ids are typed back: never cut
    for column in ("name", *(["owner"] if owners else [])):
        table.add_column(column)
    for column in ("state", "completed", "stopped", "failed", "budget", "best reward"):
        table.add_column(column)
    for s in searches:
        table.add_row(
            s.id,
            s.name,
            *([s.owner] if owners else []),
            str(s.state),
            str(s.trials_completed),
            str(s.trials_stopped),
            str(s.trials_failed),
            str(s.max_trials),
            _f4(s.best_reward) if s.best_reward is not None else "-",
        )
    results_console().print(table)
    return 0


def _cmd_trials(args: argparse.Namespace) -> int:
    with _client(args) as client:
        search = client.search(args.search_id)
        table = Table()
        for column in (
            "#",
            "state",
            "reward",
            "accuracy",
            "latency (ms)",
            "attempts",
            "trainer",
            "architecture / error",
        ):
            table.add_column(column, overflow="fold")
        for t in search.trials():
            done = t.state.scored
            state = str(t.state)
            if t.state is TrialState.STOPPED:
                state += f" at {t.stopped_at_step or 0}/{t.total_steps}"
            table.add_row(
                str(t.number),
                state,
                _f4(t.reward) if done else "-",
                _f4(t.accuracy) if done else "-",
                _ms(t) if t.latency is not None else "-",
                str(t.attempts),
                t.trainer or "-",
                t.error or t.blocks,
            )
    results_console().print(table)
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_results(results_console(), client.search(args.search_id), args.top)
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    output = Path(args.output or f"{args.search_id}-{args.trial}.pt")
    with _client(args) as client:
        data = client.search(args.search_id).weights(args.trial)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(data)
    partial.replace(output)  # never a truncated file under the final name
    print(f"wrote {len(data)} bytes of trial {args.trial}'s state_dict to {output}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.search(args.search_id).cancel()
    print(f"search {info.id} {info.state}")
    return 0


def _stack(args: argparse.Namespace, workdir: Path, controller_port: int | None) -> LocalStack:
    return LocalStack(
        workdir=workdir,
        store=args.store,
        trainers=args.trainers,
        controller_port=controller_port,
        die_with_parent=True,  # a killed `mnas` leaves no services behind
    )


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops this command as Ctrl-C does (its services are stopped with it)."""

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def _cmd_up(args: argparse.Namespace) -> int:
    """Start the services and serve until Ctrl-C or SIGTERM (at any point, also while
    starting); refuse a port that something listens on already."""
    console = Console(stderr=True)
    port_text = args.target.rpartition(":")[2]
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--target: expected HOST:PORT, got {args.target!r}") from None
    if not port_is_free(port):
        raise UsageError(
            f"--target: port {port} is taken (another `mnas up` or service listens on it); "
            "stop it or choose another port"
        )
    _interrupt_on_sigterm()
    workdir = Path(args.logs or tempfile.mkdtemp(prefix="mnas-"))
    stack = _stack(args, workdir, port)
    try:
        with console.status("starting controller, trainer, latency and reward services"):
            stack.start()
        for process in stack.processes:
            console.print(
                f"{process.name:<12} {process.address}  metrics "
                f"http://127.0.0.1:{process.metrics_port}/metrics",
                soft_wrap=True,
            )
        # Unwrapped, so the paths can be copied whole (and matched in a log).
        console.print(f"store {args.store}; logs in {workdir}; Ctrl-C stops", soft_wrap=True)
        while True:
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                raise UsageError(f"service exited: {', '.join(dead)} (logs in {workdir})")
            threading.Event().wait(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


def _cmd_search(args: argparse.Namespace) -> int:
    from mnas.cli_report import check_output, write_report  # it imports this module

    console = results_console()
    spec = load_spec(args.spec)  # a malformed file fails before anything starts
    if args.report:
        if args.report == "-":
            raise UsageError("--report: give a file; standard output shows the progress")
        check_output(args.report)
    workdir = Path(args.logs or tempfile.mkdtemp(prefix="mnas-"))
    started = time.monotonic()
    with console.status("starting controller, trainer, latency and reward services"):
        stack = _stack(args, workdir, None).start()
    console.print(
        f"services up in {time.monotonic() - started:.1f}s (store {args.store}, logs {workdir})"
    )
    try:
        with Client(stack.controller) as client:
            search = client.submit(spec)
            console.print(
                f"submitted search {search.id}: {search.info.max_trials} "
                f"trials, target {search.info.spec.objective.target_latency_seconds * 1e3:g} ms"
            )
            final = _follow(console, search)
            _print_results(console, search, args.top)
            if args.report:  # a report that cannot be written does not change the outcome
                try:
                    line = write_report(
                        search.refresh().proto,
                        [t.proto for t in search.trials()],
                        args.report,
                        top=10,
                    )
                    console.print(line, soft_wrap=True, highlight=False)
                except UsageError as err:
                    print(f"mnas: error: {err}", file=sys.stderr)
    finally:
        stack.stop()
    console.print(f"wall time {time.monotonic() - started:.1f}s")
    return 0 if final.state is SearchState.SUCCEEDED else 1


# --- parser ----------------------------------------------------------------------------


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_target: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add the search commands to the ``mnas`` parser."""

    def target(p: argparse.ArgumentParser, *, connect: bool = True) -> None:
        p.add_argument(
            "--target",
            default=os.environ.get("MNAS_TARGET", DEFAULT_TARGET),
            help=f"controller address (env MNAS_TARGET, default {DEFAULT_TARGET})",
        )
        if connect:
            add_connection_arguments(p)

    def local(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store", default="mnas.db", help="SQLite file or database URL (default mnas.db)"
        )
        p.add_argument("--trainers", type=int, default=1, help="trainer processes (default 1)")
        p.add_argument("--logs", default=None, help="directory for service logs (default: temp)")

    search = commands.add_parser(
        "search", help="start the services locally, run a spec, print the best and the Pareto front"
    )
    search.add_argument("spec", help="search spec (YAML)")
    search.add_argument("--top", type=int, default=5, help="best trials to print (default 5)")
    search.add_argument(
        "--report", default=None, metavar="FILE", help="write the HTML report there at the end"
    )
    local(search)
    search.set_defaults(run=_cmd_search)

    up = commands.add_parser("up", help="start the four services on loopback and wait")
    target(up, connect=False)
    local(up)
    up.set_defaults(run=_cmd_up)

    submit = commands.add_parser("submit", help="submit a spec to a running controller")
    submit.add_argument("spec", help="search spec (YAML)")
    target(submit)
    submit.set_defaults(run=_cmd_submit)

    watch = commands.add_parser("watch", help="follow a search until it ends")
    watch.add_argument("search_id")
    watch.add_argument("--top", type=int, default=5, help="best trials to print (default 5)")
    target(watch)
    watch.set_defaults(run=_cmd_watch)

    listing = commands.add_parser("list", help="list searches")
    target(listing)
    listing.set_defaults(run=_cmd_list)

    trials = commands.add_parser("trials", help="list a search's trials")
    trials.add_argument("search_id")
    target(trials)
    trials.set_defaults(run=_cmd_trials)

    best = commands.add_parser("best", help="a search's best trials and Pareto front")
    best.add_argument("search_id")
    best.add_argument("--top", type=int, default=5, help="how many (default 5)")
    target(best)
    best.set_defaults(run=_cmd_best)

    weights = commands.add_parser(
        "weights",
        help="save the trained weights kept for a trial (budget.keep_weights) as a "
        "PyTorch state_dict",
    )
    weights.add_argument("search_id")
    weights.add_argument("trial", type=int)
    weights.add_argument(
        "-o", "--output", default=None, help="file to write (default SEARCH-TRIAL.pt)"
    )
    target(weights)
    weights.set_defaults(run=_cmd_weights)

    cancel = commands.add_parser("cancel", help="cancel a search")
    cancel.add_argument("search_id")
    target(cancel)
    cancel.set_defaults(run=_cmd_cancel)

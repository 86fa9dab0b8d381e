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
from datetime import UTC, datetime
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

from mnas.cli_args import (
    DEFAULT_TARGET,
    LATENCY_TARGET_ENV,
    STORE_ENV,
    TARGET_ENV,
    add_connection_arguments,
    connection_from_args,
)
from mnas.cli_output import add_output_argument, print_data, print_json_line, results_console
from mnas.client import Client, MnasError, Search
from mnas.cost import count
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.errors import CommandFailed, UsageError
from mnas.local import LocalStack, port_is_free
from mnas.objective import describe, looks_for_front
from mnas.report import reference_summary
from mnas.results import EventKind, SearchInfo, SearchState, Trial, TrialState
from mnas.specfile import load_spec
from mnas.v1 import common_pb2

__all__ = ["EXIT_INTERRUPTED", "add_commands"]

DEFAULT_STORE = "mnas.db"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as the shell reports a command Ctrl-C ended
# What the latency in the tables is (docs/latency.md says more).
LATENCY_NOTE = (
    "* latency: the mean of the fastest tenth of the timed runs; on host-cpu scaled by "
    "the speed of a fixed model timed beside each run (so it can be below every raw "
    "sample); the median where a latency service reports no such figure. docs/latency.md"
)


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
    for column in ("#", "reward", "accuracy", "latency (ms)*", "params", "MACs"):
        table.add_column(column, justify="right", no_wrap=True)
    lines = []
    for trial in trials:
        arch = trial.arch()
        cost = count(
            arch,
            width=spec.space.width or DEFAULT_WIDTH,
            resolution=spec.latency.resolution or spec.space.resolution or DEFAULT_RESOLUTION,
            num_classes=spec.space.num_classes or DEFAULT_NUM_CLASSES,
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
    console.print(LATENCY_NOTE, soft_wrap=True, highlight=False)


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
    if looks_for_front(info.spec.objective):  # the front is the result
        front = search.pareto()
        if front:
            title = f"Pareto front: accuracy vs latency ({len(front)} trials)"
            _print_trials(console, title, front, info.spec)
        return
    best = search.best(k)
    if best:
        _print_trials(console, f"best {len(best)} by reward", best, info.spec)
        _print_trials(console, "Pareto front: accuracy vs latency", search.pareto(), info.spec)


def _hours_so_far(info: SearchInfo) -> float:
    """Hours the search has run: to its end, or to now while it runs."""
    if info.created_at is None:
        return 0.0
    end = info.finished_at or datetime.now(UTC)
    return max(0.0, (end - info.created_at).total_seconds() / 3600)


def _rate(info: SearchInfo) -> str:
    """Trials per hour over the search's own life (not since this command started)."""
    done = info.trials_completed + info.trials_stopped + info.trials_failed
    hours = _hours_so_far(info)
    return f"{done / hours:.0f}" if done and hours > 0 else "-"


def _follow(console: Console, search: Search) -> SearchInfo:
    """Show the search's progress until it finishes: a progress bar at a terminal, one
    line per finished trial elsewhere (a pipe or a log file gets them as they happen)."""
    if not console.is_terminal:
        return _follow_lines(search)
    total = search.info.max_trials
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
            best = _f4(info.best_reward) if info.best_reward is not None else "-"
            progress.update(
                task,
                completed=info.trials_completed + info.trials_stopped,
                best=best,
                rate=_rate(info),
                running=info.trials_running,
            )
            trial = event.trial
            if event.kind is EventKind.TRIAL_FINISHED and trial is not None and trial.error:
                progress.console.print(f"trial {trial.number} {trial.state}: {trial.error}")
    return search.refresh()


def _follow_lines(search: Search) -> SearchInfo:
    for event in search.watch():
        info, trial = event.search, event.trial
        done = info.trials_completed + info.trials_stopped
        best = _f4(info.best_reward) if info.best_reward is not None else "-"
        if event.kind is EventKind.SNAPSHOT:  # where it stands as the watch begins
            print(
                f"search {info.id} {info.state}: {done}/{info.max_trials} done, best {best}, "
                f"{_rate(info)} trials/h",
                flush=True,
            )
        if event.kind is not EventKind.TRIAL_FINISHED or trial is None:
            continue
        if trial.state.scored:
            what = f"reward {_f4(trial.reward)}, accuracy {_f4(trial.accuracy)}, {_ms(trial)} ms"
        else:
            what = trial.error or "no result"
        print(
            f"trial {trial.number} {trial.state}: {what}; {done}/{info.max_trials} done, "
            f"best {best}, {_rate(info)} trials/h",
            flush=True,
        )
    return search.refresh()


# --- commands --------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    tls, token = connection_from_args(args)
    return Client(args.target, tls=tls, token=token)


def _cmd_submit(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    with _client(args) as client:
        search = client.submit(spec)
    if args.output != "table":
        print_data(args.output, search.info.to_dict())
        return 0
    print(search.id)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        search = client.search(args.search_id)
        if args.output == "table":
            console = results_console()
            final = _follow(console, search)
            _print_results(console, search, args.top)
        else:  # every event as it comes, one JSON object a line
            for event in search.watch():
                print_json_line(event.to_dict())
            final = search.refresh()
    return 0 if final.state is SearchState.SUCCEEDED else 1


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        searches = client.searches()
    if args.output != "table":
        print_data(args.output, [s.to_dict() for s in searches])
        return 0
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
        if args.output != "table":
            print_data(args.output, [t.to_dict() for t in search.trials()])
            return 0
        table = Table()
        for column in (
            "#",
            "state",
            "reward",
            "accuracy",
            "latency (ms)*",
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
    console = results_console()
    console.print(table)
    console.print(LATENCY_NOTE, soft_wrap=True, highlight=False)
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    with _client(args) as client:
        search = client.search(args.search_id)
        if args.output != "table":
            info = search.refresh()
            print_data(
                args.output,
                {
                    "search": info.to_dict(),
                    "best": [t.to_dict() for t in search.best(args.top)],
                    "pareto": [t.to_dict() for t in search.pareto()],
                },
            )
            return 0
        _print_results(results_console(), search, args.top)
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
    if args.output != "table":
        print_data(args.output, info.to_dict())
        return 0
    print(f"search {info.id} {info.state}")
    return 0


def _check_store(store: str) -> None:
    """A SQLite file's directory must exist: a typo must not create directories."""
    if "://" in store:  # a database URL: the database says what is wrong with it
        return
    parent = Path(store).expanduser().parent
    if not parent.is_dir():
        raise UsageError(
            f"--store: no directory {str(parent)!r} for the SQLite file "
            f"{Path(store).name!r}; create it first, or give a database URL"
        )


def _stack(
    args: argparse.Namespace,
    workdir: Path,
    controller_port: int | None,
    latency_port: int | None = None,
) -> LocalStack:
    _check_store(args.store)
    return LocalStack(
        workdir=workdir,
        store=args.store,
        trainers=args.trainers,
        controller_port=controller_port,
        latency_port=latency_port,
        die_with_parent=True,  # a killed `mnas` leaves no services behind
    )


def _start(console: Console, stack: LocalStack) -> LocalStack:
    """Start the services; one that does not come up is one line, naming its log."""
    with console.status("starting controller, trainer, latency and reward services"):
        try:
            return stack.start()
        except (RuntimeError, TimeoutError) as err:
            first = str(err).splitlines()[0]
            raise CommandFailed(f"{first} (logs in {stack.workdir})") from None


def _show_resumed(console: Console, client: Client, submitted: str = "") -> None:
    """Say which searches the controller took up again from the store (all running
    searches but the one just submitted), and how to follow or cancel them."""
    resumed = [s for s in client.searches() if s.state is SearchState.RUNNING and s.id != submitted]
    for info in resumed:
        done = info.trials_completed + info.trials_stopped
        console.print(
            f"resumed search {info.id} ({info.name or 'unnamed'}) from the store: "
            f"{done}/{info.max_trials} trials done; `mnas watch {info.id}` follows it, "
            f"`mnas cancel {info.id}` ends it",
            soft_wrap=True,
            highlight=False,
        )


def _interrupt_on_sigterm() -> threading.Event:
    """SIGTERM stops this command as Ctrl-C does (its services are stopped with it). The
    event tells that either came: gRPC cancels a call that Ctrl-C interrupts, and the
    error it raises then is the interrupt, not the controller's failure."""
    interrupted = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return interrupted


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
    # The latency service next to the controller (50052 by default, where `mnas devices`
    # and `mnas latency measure` look), or anywhere free: the export line says where.
    latency_port = port + 1 if port < 65535 and port_is_free(port + 1) else None
    stack = _stack(args, workdir, port, latency_port)
    try:
        _start(console, stack)
        for process in stack.processes:
            console.print(
                f"{process.name:<12} {process.address}  metrics "
                f"http://127.0.0.1:{process.metrics_port}/metrics",
                soft_wrap=True,
            )
        # Unwrapped, so the paths can be copied whole (and matched in a log).
        console.print(f"store {args.store}; logs in {workdir}; Ctrl-C stops", soft_wrap=True)
        with Client(stack.controller) as client:
            _show_resumed(console, client)
        # On standard output, for the other commands of another shell (or a script).
        print(
            f"export {TARGET_ENV}={stack.controller} {LATENCY_TARGET_ENV}={stack.latency} "
            f"{STORE_ENV}={args.store}",
            flush=True,
        )
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
    _check_store(args.store)
    interrupted = _interrupt_on_sigterm()
    workdir = Path(args.logs or tempfile.mkdtemp(prefix="mnas-"))
    started = time.monotonic()
    stack = _start(console, _stack(args, workdir, None))
    console.print(
        f"services up in {time.monotonic() - started:.1f}s (store {args.store}, logs {workdir})"
    )
    search_id = ""
    try:
        with Client(stack.controller) as client:
            search = client.submit(spec)
            search_id = search.id
            console.print(
                f"submitted search {search.id}: {search.info.max_trials} trials, objective "
                f"{describe(search.info.spec.objective)}",
                soft_wrap=True,
                highlight=False,
            )
            _show_resumed(console, client, submitted=search.id)
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
    except (KeyboardInterrupt, MnasError):
        if not interrupted.is_set():
            raise
        stack.stop()
        _say_interrupted(search_id, args.store)
        return EXIT_INTERRUPTED
    finally:
        stack.stop()
    console.print(f"wall time {time.monotonic() - started:.1f}s")
    return 0 if final.state is SearchState.SUCCEEDED else 1


def _say_interrupted(search_id: str, store: str) -> None:
    """What became of the search when Ctrl-C stopped `mnas search`, and what to do."""
    if not search_id:
        print("mnas: interrupted before the search was submitted", file=sys.stderr)
        return
    print(
        f"mnas: interrupted: search {search_id} stays running in the store {store} and "
        f"resumes, where it stood, when a controller next starts on it: "
        f"`mnas up --store {store}`, then `mnas watch {search_id}` follows it and "
        f"`mnas cancel {search_id}` ends it",
        file=sys.stderr,
    )


# --- parser ----------------------------------------------------------------------------


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_target: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Add the search commands to the ``mnas`` parser."""

    def target(p: argparse.ArgumentParser, *, connect: bool = True) -> None:
        p.add_argument(
            "--target",
            default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
            help=f"controller address (env {TARGET_ENV}, default {DEFAULT_TARGET}; `mnas up` "
            "prints it)",
        )
        if connect:
            add_connection_arguments(p)

    def local(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store",
            default=os.environ.get(STORE_ENV, DEFAULT_STORE),
            help=f"SQLite file or database URL (env {STORE_ENV}, default {DEFAULT_STORE}); a "
            "file's directory must exist",
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
    add_output_argument(submit, what="the search as one object; table prints its id")
    submit.set_defaults(run=_cmd_submit)

    watch = commands.add_parser("watch", help="follow a search until it ends")
    watch.add_argument("search_id")
    watch.add_argument("--top", type=int, default=5, help="best trials to print (default 5)")
    target(watch)
    add_output_argument(watch, what="every event as it comes, one object a line")
    watch.set_defaults(run=_cmd_watch)

    listing = commands.add_parser("list", help="list searches")
    target(listing)
    add_output_argument(listing, what="a list of searches")
    listing.set_defaults(run=_cmd_list)

    trials = commands.add_parser("trials", help="list a search's trials")
    trials.add_argument("search_id")
    target(trials)
    add_output_argument(trials, what="a list of trials")
    trials.set_defaults(run=_cmd_trials)

    best = commands.add_parser("best", help="a search's best trials and Pareto front")
    best.add_argument("search_id")
    best.add_argument("--top", type=int, default=5, help="how many (default 5)")
    target(best)
    add_output_argument(best, what="the search, its best trials and its Pareto front")
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
    add_output_argument(cancel, what="the search as one object")
    cancel.set_defaults(run=_cmd_cancel)

"""The ``mnas`` command line.

An error prints one line, ``mnas: error: ...``, to standard error (a spec's problems one
line each). Exit status: 0 success, 1 the search or command failed, 2 usage or bad input
(a malformed block string, a choice outside the space, an unknown name), 3 the service is
unreachable, 4 not found. An error of the system (a file that cannot be written, say) is
one line too, with status 1; when the reader of standard output goes away early
(``mnas list | head -1``) the command ends quietly with status 141, as a Unix tool that
gets SIGPIPE does.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from mnas import references
from mnas.cli_args import add_arch_selector, arch_from_args
from mnas.cli_latency import add_commands as add_latency_commands
from mnas.cli_output import add_output_argument, print_data, results_console
from mnas.cli_report import add_commands as add_report_commands
from mnas.cli_searches import EXIT_INTERRUPTED, add_commands
from mnas.cli_validate import add_command as add_validate_command
from mnas.client import MnasError, Unauthenticated
from mnas.cost import count
from mnas.errors import CommandFailed, NotFound, ServiceUnreachable, UsageError
from mnas.space import PRESETS, SearchSpace, preset

__all__ = ["main"]

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as the shell reports a tool that SIGPIPE ended
EXIT_STATUS_HELP = (
    "exit status: 0 success, 1 the search or command failed, 2 usage or bad input, "
    "3 the service is unreachable, 4 not found; 130 after Ctrl-C, 141 when the reader of "
    "the output went away (| head). Commands read MNAS_TARGET, MNAS_LATENCY_TARGET, "
    "MNAS_STORE and MNAS_TOKEN, which `mnas up` prints"
)


def exit_status(err: Exception) -> int:
    """The exit status of a command that raised ``err``."""
    if isinstance(err, ServiceUnreachable):
        return EXIT_UNREACHABLE
    if isinstance(err, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(err, (ValueError, UsageError, Unauthenticated)):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except (ValueError, UsageError, MnasError, ServiceUnreachable, NotFound, CommandFailed) as err:
        _print_error(str(err))
        return exit_status(err)
    except KeyboardInterrupt:
        print("mnas: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (| head): end quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _print_error(f"{where}{err.strerror or err}")
        return EXIT_FAILED


def _print_error(message: str) -> None:
    for line in message.splitlines() or [""]:  # one line per problem (a spec's)
        print(f"mnas: error: {' '.join(line.split())}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush of what is
    buffered for the closed pipe raises nothing at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# --- arch ------------------------------------------------------------------------------


def _cmd_arch_describe(args: argparse.Namespace) -> int:
    name, arch = arch_from_args(args)
    report = count(arch, width=args.width, resolution=args.resolution, num_classes=args.classes)
    if args.output != "table":
        out: dict[str, Any] = {
            "name": name,
            "id": arch.id,
            "canonical": arch.canonical,
            "params": report.params,
            "macs": report.macs,
            "width": args.width,
            "resolution": args.resolution,
            "classes": args.classes,
            "stem": {"params": report.stem.params, "macs": report.stem.macs},
            "blocks": [
                {
                    "index": b.index,
                    "block": b.block,
                    "layers": b.layers,
                    "params": b.params,
                    "macs": b.macs,
                    "out_channels": b.out_channels,
                    "out_size": b.out_size,
                }
                for b in report.blocks
            ],
            "head": {"params": report.head.params, "macs": report.head.macs},
        }
        print_data(args.output, out)
        return 0
    console = results_console()
    title = (
        f"{name or 'architecture'} {arch.id}  (width {args.width:g}, "
        f"{args.resolution}x{args.resolution}, {args.classes} classes)"
    )
    table = Table(title=title)
    for column in ("#", "block", "layers", "out", "params", "MACs"):
        if column == "block":
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    table.add_row("", "stem", "1", "", f"{report.stem.params:,}", f"{report.stem.macs:,}")
    for b in report.blocks:
        table.add_row(
            str(b.index),
            b.block,
            str(b.layers),
            f"{b.out_size}x{b.out_size}x{b.out_channels}",
            f"{b.params:,}",
            f"{b.macs:,}",
        )
    table.add_row(
        "", "head", "", f"{args.classes}", f"{report.head.params:,}", f"{report.head.macs:,}"
    )
    console.print(table)
    console.print(f"parameters: {report.params:,} ({report.params / 1e6:.2f}M)")
    console.print(f"multiply-adds: {report.macs:,} ({report.macs / 1e6:.1f}M)")
    console.print(f"canonical: {arch.canonical}", soft_wrap=True)
    return 0


def _cmd_arch_sample(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise UsageError(f"--count: must be at least 1, got {args.count}")
    space = _preset_space(args.preset)
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.count)]
    if args.output != "table":
        print_data(
            args.output,
            [{"id": a.id, "blocks": " ".join(str(b) for b in a.blocks)} for a in archs],
        )
        return 0
    for arch in archs:
        print(" ".join(str(b) for b in arch.blocks))
    return 0


def _cmd_arch_list(args: argparse.Namespace) -> int:
    rows = [(name, references.get(name)) for name in references.names()]
    if args.output != "table":
        reports = [(name, arch, count(arch)) for name, arch in rows]
        print_data(
            args.output,
            [
                {"name": name, "id": arch.id, "params": r.params, "macs": r.macs}
                for name, arch, r in reports
            ],
        )
        return 0
    for name, arch in rows:
        report = count(arch)
        print(
            f"{name:<14} {arch.id}  {report.params / 1e6:5.2f}M params  "
            f"{report.macs / 1e6:6.1f}M MACs"
        )
    return 0


def _cmd_arch_export(args: argparse.Namespace) -> int:
    _, arch = arch_from_args(args)
    try:
        from services.latency.export import export_arch
    except ImportError as err:
        raise UsageError(
            f"exporting needs the latency extra (pip install 'mnas[latency]'): {err}"
        ) from None
    path = Path(args.output)
    if not path.parent.is_dir():
        raise UsageError(f"-o: no directory {str(path.parent)!r} to write {path.name!r} in")
    data = export_arch(arch, num_classes=args.classes, resolution=args.resolution, width=args.width)
    path.write_bytes(data)
    print(f"wrote {path} ({len(data):,} bytes, {arch.id})")
    return 0


# --- space -----------------------------------------------------------------------------


def _preset_space(name: str) -> SearchSpace:
    try:
        return SearchSpace(stages=preset(name).stages)
    except ValueError as err:
        raise UsageError(f"--preset: {str(err).removeprefix('space.preset: ')}") from None


def _cmd_space_describe(args: argparse.Namespace) -> int:
    space = _preset_space(args.preset)
    summary = space.describe()
    if args.output != "table":
        print_data(args.output, summary)
        return 0
    console = results_console()
    chosen = preset(args.preset)
    table = Table(
        title=f"factorized hierarchical search space, preset {chosen.name}: {chosen.description}"
    )
    table.add_column("block", justify="right")
    table.add_column("t,c,n,s", no_wrap=True)
    for kind in ("op", "kernel", "se", "skip", "filters", "layers"):
        table.add_column(kind, min_width=8 if kind == "skip" else None)
    for block in summary["blocks"]:  # type: ignore[attr-defined]
        ref = block["reference"]
        choices = block["choices"]
        table.add_row(
            str(block["block"]),
            f"{ref['expansion']},{ref['filters']},{ref['layers']},{ref['stride']}",
            " ".join(choices["op"]),
            " ".join(choices["kernel"]),
            " ".join(choices["se"]),
            " ".join(choices["skip"]),
            " ".join(str(f) for f in block["filters"]),
            " ".join(str(n) for n in block["layers"]),
        )
    console.print(table)
    console.print(f"choices per block: {space.choices_per_block}")
    console.print(
        f"size: {space.size} choice combinations (10^{space.log10_size:.2f}), as the paper "
        f"counts; {space.distinct_size} (10^{space.log10_distinct_size:.2f}) with the filter "
        "and layer counts that two choices round to alike counted once",
        soft_wrap=True,
    )
    return 0


# --- parser ----------------------------------------------------------------------------


def _print_help_by_default(p: argparse.ArgumentParser) -> None:
    def show(_: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return EXIT_USAGE

    p.set_defaults(run=show)


def _preset_argument(p: argparse.ArgumentParser) -> None:
    known = "; ".join(f"{name}: {value.description}" for name, value in PRESETS.items())
    p.add_argument(
        "--preset", default="mnasnet", help=f"the space's stage schedule (default mnasnet). {known}"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnas")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnas",
        description="Platform-aware neural architecture search (MnasNet).",
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"mnas {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    arch = commands.add_parser("arch", help="describe, sample and export architectures")
    _print_help_by_default(arch)
    arch_commands = arch.add_subparsers(title="commands", metavar="COMMAND")

    describe = arch_commands.add_parser(
        "describe", help="parameters, multiply-adds and a per-block table"
    )
    add_arch_selector(describe)
    add_output_argument(describe)
    describe.set_defaults(run=_cmd_arch_describe)

    sample = arch_commands.add_parser(
        "sample", help="random architectures from a space preset, one per line"
    )
    sample.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    sample.add_argument("--count", type=int, default=1, help="how many (default 1)")
    _preset_argument(sample)
    add_output_argument(sample, what="a list of objects")
    sample.set_defaults(run=_cmd_arch_sample)

    listing = arch_commands.add_parser("list", help="the named reference architectures")
    add_output_argument(listing, what="a list of objects")
    listing.set_defaults(run=_cmd_arch_list)

    export = arch_commands.add_parser(
        "export", help="write the .tflite file the latency service would measure"
    )
    add_arch_selector(export)
    export.add_argument("-o", "--output", required=True, help="output .tflite path")
    export.set_defaults(run=_cmd_arch_export)

    add_commands(commands)
    add_latency_commands(commands)
    add_report_commands(commands)
    add_validate_command(commands)

    space = commands.add_parser("space", help="the search space")
    _print_help_by_default(space)
    space_commands = space.add_subparsers(title="commands", metavar="COMMAND")
    space_describe = space_commands.add_parser("describe", help="per-block choices and size")
    add_output_argument(space_describe)
    _preset_argument(space_describe)
    space_describe.set_defaults(run=_cmd_space_describe)
    return parser


if __name__ == "__main__":
    sys.exit(main())

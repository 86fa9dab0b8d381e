"""``python -m services.trainer --port P``: run a trainer until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from services.common.cli import base_parser, configure_logging, server_tls
from services.common.server import catch_stop_signals, serve_from_args, service_registry
from services.trainer.catalog import parse_dataset_flag
from services.trainer.server import TrainerConfig, make_server

_logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(
        "python -m services.trainer", "Train architectures briefly (mnas.v1.Trainer)."
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=1,
        help="trainings run at once; more are refused (default 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="most torch intra-op threads of a training, fewer when fewer cores are idle as "
        "it starts (default: the cores this process may use, by CPU affinity and cgroup "
        "quota, divided among the --max-concurrent slots)",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:N or auto (default cpu)"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=0.0,
        help="on SIGTERM, seconds running trainings may go on before they are "
        "ended with UNAVAILABLE; keep below --grace (default 0)",
    )
    parser.add_argument(
        "--memory-limit",
        type=_bytes,
        default=None,
        help="memory a CPU trial may allocate, e.g. 4GiB or 512MiB; past it the trial "
        "fails alone (default: physical memory divided among the slots)",
    )
    parser.add_argument(
        "--no-isolation",
        action="store_true",
        help="train on threads of this process instead of a child process per trial "
        "(no memory limit or timeout; for debugging)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        type=_dataset,
        metavar="NAME=DIR",
        help="serve the data set in directory DIR (IDX, CIFAR-10/100 or class folders) as "
        "NAME, e.g. cifar10=/data/cifar-10-batches-py; repeatable. Built in: fashion-mnist "
        "(Debian's dataset-fashion-mnist). Specs may also name a directory inside a "
        "--data-root",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a spec's training.dataset may name a directory by path inside DIR (after "
        "links and '..' are resolved); repeatable (default: none, names only)",
    )
    parser.add_argument(
        "--preload-dataset",
        action="append",
        default=None,
        metavar="NAME",
        help="a data set (name or path) to decode once for every trial; repeatable "
        "(default: fashion-mnist)",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    catch_stop_signals()  # a signal during start-up is not lost
    registry = service_registry(args, "trainer")
    try:
        config = TrainerConfig(
            port=args.port,
            host=args.host,
            max_concurrent=args.max_concurrent,
            threads=args.threads,
            device=args.device,
            drain_seconds=args.drain,
            memory_limit_bytes=args.memory_limit,
            isolate=not args.no_isolation,
            preload_datasets=tuple(args.preload_dataset or ("fashion-mnist",)),
            datasets=tuple(args.dataset),
            data_roots=tuple(args.data_root),
            tls=server_tls(parser, args),
            health_port=args.health_port,
        )
        running = make_server(config, registry)
    except ValueError as err:
        parser.error(str(err))
    _logger.info("trainer bound to %s:%d", args.host, running.port)
    serve_from_args(running, args)


def _dataset(text: str) -> tuple[str, Path]:
    try:
        return parse_dataset_flag(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("dataset: ")) from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def _bytes(text: str) -> int:
    """``4GiB``, ``512MiB``, ``512M`` or a number of bytes (binary units)."""
    match = _SIZE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 4GiB or 512MiB, got {text!r}")
    return int(float(match.group(1)) * 2 ** _POWERS[match.group(2).upper()])


if __name__ == "__main__":
    main()

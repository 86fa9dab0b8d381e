"""``python -m services.trainer --port P``: run a trainer until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from services.common.cli import base_parser, configure_logging
from services.common.server import serve_from_args
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
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
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
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    registry = CollectorRegistry()
    try:
        config = TrainerConfig(
            port=args.port,
            host=args.host,
            max_concurrent=args.max_concurrent,
            threads=args.threads,
            device=args.device,
            drain_seconds=args.drain,
        )
        running = make_server(config, registry)
    except ValueError as err:
        parser.error(str(err))
    _logger.info("trainer bound to %s:%d", args.host, running.port)
    serve_from_args(running, registry, args)


if __name__ == "__main__":
    main()

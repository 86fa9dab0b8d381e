"""``python -m services.reward --port P [--metrics-port M]``."""

from __future__ import annotations

from services.common.cli import base_parser, configure_logging, server_tls
from services.common.server import catch_stop_signals, serve_from_args, service_registry
from services.reward.server import make_server


def main() -> None:
    parser = base_parser("python -m services.reward", "The mnas reward service.")
    args = parser.parse_args()
    configure_logging(args.log_level)
    catch_stop_signals()  # a signal during start-up is not lost
    tls = server_tls(parser, args)
    registry = service_registry(args, "reward")
    running = make_server(
        registry=registry,
        port=args.port,
        host=args.host,
        tls=tls,
        health_port=args.health_port,
    )
    serve_from_args(running, args)


if __name__ == "__main__":
    main()

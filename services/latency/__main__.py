"""``python -m services.latency --port P [--metrics-port M]``.

The server binds and answers health at once; TensorFlow (seconds to import) loads in a
background thread meanwhile, and a Measure that arrives first waits for it.
"""

from __future__ import annotations

import os

# Before anything imports TensorFlow: keep its C++ logging to warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging
import threading

from prometheus_client import CollectorRegistry

from services.common.cli import base_parser, configure_logging
from services.common.server import serve_from_args
from services.latency.server import make_server
from services.latency.service import DEFAULT_CACHE_SIZE, preload_exporter

_logger = logging.getLogger("services.latency")


def _preload() -> None:
    try:
        preload_exporter()
    except Exception:
        _logger.exception("could not load the exporter; Measure calls will fail")


def main() -> None:
    parser = base_parser(
        "python -m services.latency", "The mnas latency service (host CPU through LiteRT)."
    )
    parser.add_argument(
        "--cache-size",
        type=int,
        default=DEFAULT_CACHE_SIZE,
        help=f"results kept in the cache (default {DEFAULT_CACHE_SIZE})",
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    logging.getLogger("absl").setLevel(logging.WARNING)  # the TFLite converter's notices
    registry = CollectorRegistry()
    running = make_server(
        registry=registry, port=args.port, host=args.host, cache_size=args.cache_size
    )
    threading.Thread(target=_preload, name="preload-tensorflow", daemon=True).start()
    serve_from_args(running, registry, args)


if __name__ == "__main__":
    main()

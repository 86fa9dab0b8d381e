"""``python -m services.latency --port P [--metrics-port M] [--phones FARM.yaml]``.

The server binds and answers health at once; the exporter and LiteRT load in a background
thread meanwhile, and a Measure that arrives first waits for them. With
``--phones`` it also serves the phones attached to this machine's adb server, one device
class per profile of the farm file (docs/phones.md).
"""

from __future__ import annotations

import os

# Should anything import TensorFlow: keep its C++ logging to warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common.cli import base_parser, configure_logging
from services.common.server import serve_from_args
from services.latency.oracle import HostOracle, LatencyOracle
from services.latency.phones.farm import phone_oracles_from_file
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
    parser.add_argument(
        "--phones",
        type=Path,
        default=None,
        help="farm file (YAML) with the profiles of the phone models attached over adb; "
        "see docs/phones.md",
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    oracles: list[LatencyOracle] = [HostOracle()]
    if args.phones is not None:
        try:
            phones = phone_oracles_from_file(args.phones)
        except (OSError, ValueError) as err:
            parser.error(f"--phones: {err}")
        oracles.extend(phones)
        for oracle in phones:
            _logger.info("%s: %d phone(s)", oracle.device_class, len(oracle.devices()))
    registry = CollectorRegistry()
    running = make_server(
        registry=registry,
        port=args.port,
        host=args.host,
        cache_size=args.cache_size,
        oracles=oracles,
    )
    threading.Thread(target=_preload, name="preload-tensorflow", daemon=True).start()
    serve_from_args(running, registry, args)


if __name__ == "__main__":
    main()

"""``python -m services.latency --port P [--metrics-port M] [--phones FARM.yaml]``.

The server binds and answers health at once; the exporter and LiteRT load in a background
thread meanwhile, and a Measure that arrives first waits for them. With
``--phones`` it also serves the phones attached to this machine's adb server, one device
class per profile of the farm file (docs/phones.md). On the host CPU every run is followed
by a run of a reference model (``mnasnet-small`` at 224) that cancels machine-wide
slowdowns (``--no-reference`` turns it off). ``--predictor FILE`` serves a calibrated
predictor as the device class ``<class>-predicted`` (docs/predictor.md).
"""

from __future__ import annotations

import os

# Should anything import TensorFlow: keep its C++ logging to warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import logging
import threading
from pathlib import Path

from mnas import references
from services.common.cli import base_parser, configure_logging, server_tls
from services.common.server import catch_stop_signals, serve_from_args, service_registry
from services.latency.oracle import HostOracle, LatencyOracle
from services.latency.phones.adb import PhoneConnectionError
from services.latency.phones.farm import phone_oracles_from_file
from services.latency.predictor import (
    KernelMeasurer,
    LatencyPredictor,
    PredictedLatency,
    host_build,
)
from services.latency.server import make_server
from services.latency.service import DEFAULT_CACHE_SIZE, preload_exporter

_logger = logging.getLogger("services.latency")


def _preload() -> None:
    try:
        preload_exporter()
    except Exception:
        _logger.exception("could not load the exporter; Measure calls will fail")


REFERENCE = "mnasnet-small"


def _load_predictor(path: Path) -> LatencyPredictor:
    """A predictor file, for the device class it says it was calibrated on."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read: {err}") from None
    device_class = data.get("device_class") if isinstance(data, dict) else None
    if not isinstance(device_class, str):
        raise ValueError(f"{path}: no device_class")
    return LatencyPredictor.from_json(data, device_class=device_class, where=str(path))


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
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="on the host CPU, report the fastest-tenth mean of the runs alone, without the "
        "interleaved reference model (faster, less repeatable on a shared machine)",
    )
    parser.add_argument(
        "--reference-baseline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the reference model's undisturbed latency (default: timed at first use); fix "
        "it to compare figures across restarts",
    )
    parser.add_argument(
        "--predictor",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a calibrated predictor file (mnas latency calibrate); served as "
        "<device class>-predicted; repeatable",
    )
    parser.add_argument(
        "--predictor-measure-unseen",
        action="store_true",
        help="a host-cpu predictor measures a kernel it was not calibrated for on this CPU "
        "at first use (instead of refusing the architecture)",
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    catch_stop_signals()  # a signal during start-up is not lost
    tls = server_tls(parser, args)
    reference = None
    if not args.no_reference:
        from services.latency.export import export_arch

        reference = export_arch(references.get(REFERENCE), resolution=224, num_classes=1000)
    oracles: list[LatencyOracle] = [
        HostOracle(reference=reference, reference_baseline=args.reference_baseline)
    ]
    if args.phones is not None:
        try:
            phones = phone_oracles_from_file(args.phones)
        except PhoneConnectionError as err:
            # Phones are listed once, at start: without the adb server there is nothing to
            # serve them with. Exit, so a supervisor (the kubelet) starts us again.
            parser.exit(1, f"{parser.prog}: error: --phones: adb server unreachable: {err}\n")
        except (OSError, ValueError) as err:
            parser.error(f"--phones: {err}")
        oracles.extend(phones)
        for oracle in phones:
            _logger.info("%s: %d phone(s)", oracle.device_class, len(oracle.devices()))
    predictors = []
    for path in args.predictor:
        try:
            data = _load_predictor(path)
        except (OSError, ValueError) as err:
            parser.error(f"--predictor: {err}")
        if data.device_class == "host-cpu" and data.build != host_build():
            _logger.warning(
                "%s was calibrated on %r, this host is %r: predictions may be off",
                path,
                data.build,
                host_build(),
            )
        if args.predictor_measure_unseen and data.device_class == oracles[0].device_class:
            data.measure_unseen = KernelMeasurer(oracles[0])
        predictors.append(PredictedLatency(data))
    registry = service_registry(args, "latency")
    running = make_server(
        registry=registry,
        port=args.port,
        host=args.host,
        cache_size=args.cache_size,
        oracles=oracles,
        predictors=predictors,
        tls=tls,
        health_port=args.health_port,
    )
    threading.Thread(target=_preload, name="preload-tensorflow", daemon=True).start()
    serve_from_args(running, args)


if __name__ == "__main__":
    main()

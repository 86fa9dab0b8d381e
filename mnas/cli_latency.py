"""The latency commands of the ``mnas`` CLI: ``devices`` (what a latency service measures
on), ``latency measure`` (one architecture, through a latency service or in-process) and
``latency calibrate`` (a predictor for this machine's CPU)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from rich.table import Table

from mnas.cli_args import (
    DEFAULT_LATENCY_TARGET,
    LATENCY_TARGET_ENV,
    add_arch_selector,
    add_connection_arguments,
    arch_from_args,
    connection_from_args,
)
from mnas.cli_output import add_output_argument, print_data, results_console
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH
from mnas.errors import ServiceUnreachable, UsageError
from mnas.latency import reported_seconds
from mnas.rpc import channel
from mnas.tls import ClientTLS
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc

__all__ = ["add_commands"]

TIMEOUT_SECONDS = 600.0  # a measurement may wait for a busy or hot phone


def _stub(target: str, tls: ClientTLS | None) -> tuple[grpc.Channel, latency_pb2_grpc.LatencyStub]:
    ch = channel(target, tls=tls)
    return ch, latency_pb2_grpc.LatencyStub(ch)


def _rpc(
    target: str,
    call: Callable[[latency_pb2_grpc.LatencyStub], Any],
    tls: ClientTLS | None = None,
) -> Any:
    ch, stub = _stub(target, tls)
    try:
        return call(stub)
    except grpc.RpcError as err:
        message = f"latency service at {target}: {err.code().name}: {err.details()}"
        if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ServiceUnreachable(message) from None
        raise UsageError(message) from None
    finally:
        ch.close()


# --- devices -----------------------------------------------------------------------------


def _cmd_devices(args: argparse.Namespace) -> int:
    response: latency_pb2.ListDevicesResponse = _rpc(
        args.target,
        lambda stub: stub.ListDevices(latency_pb2.ListDevicesRequest(), timeout=30),
        connection_from_args(args)[0],
    )
    if args.output != "table":
        print_data(args.output, [_as_dict(d) for d in response.devices])
        return 0
    table = Table()
    table.add_column("device", no_wrap=True)  # serials are typed back: never cut
    for column in ("class", "model", "state", "android", "abi", "temp", "battery", "governor"):
        table.add_column(column)
    table.add_column("note", overflow="fold")
    for d in response.devices:
        battery = ""
        if d.HasField("battery_level"):
            battery = f"{d.battery_level}%" + (" charging" if d.powered else "")
        table.add_row(
            d.id,
            d.device_class,
            d.model,
            d.state,
            d.android_version or "-",
            d.abi or "-",
            f"{d.temperature_celsius:.1f} C" if d.HasField("temperature_celsius") else "-",
            battery or "-",
            d.cpu_governor or "-",
            d.health_reason
            or (f"{d.consecutive_failures} failures" if d.consecutive_failures else ""),
        )
    results_console().print(table)
    return 0


# --- latency measure ---------------------------------------------------------------------


def _cmd_measure(args: argparse.Namespace) -> int:
    name, arch = arch_from_args(args)
    if args.local:
        stats, export_seconds = _measure_locally(args, arch.canonical)
    else:
        request = latency_pb2.MeasureRequest(
            architecture=common_pb2.Architecture(canonical=arch.canonical),
            build=common_pb2.BuildParams(
                resolution=args.resolution, num_classes=args.classes, width=args.width
            ),
            settings=common_pb2.LatencySettings(
                device_class=args.device_class or "",
                warmup_runs=args.warmup_runs,
                runs=args.runs,
                threads=args.threads,
                resolution=args.resolution,
            ),
        )
        response: latency_pb2.MeasureResponse = _rpc(
            args.target,
            lambda stub: stub.Measure(request, timeout=TIMEOUT_SECONDS),
            connection_from_args(args)[0],
        )
        stats, export_seconds = response.stats, response.export_seconds
    if args.output != "table":
        print_data(
            args.output,
            {
                "architecture": name or arch.canonical,
                "id": arch.id,
                "export_seconds": round(export_seconds, 4),
                **_as_dict(stats),
            },
        )
        return 0
    label = name or arch.id
    print(
        f"{label} on {stats.device_class} ({stats.device}): "
        f"{reported_seconds(stats) * 1e3:.3f} ms (fastest-tenth mean), median "
        f"{stats.median_seconds * 1e3:.3f}, min {stats.min_seconds * 1e3:.3f}, "
        f"p90 {stats.p90_seconds * 1e3:.3f}, mean {stats.mean_seconds * 1e3:.3f} "
        f"over {len(stats.samples_seconds)} samples; export {export_seconds:.2f} s"
    )
    if stats.flags:
        print(f"flags: {', '.join(stats.flags)}")
    return 0


def _measure_locally(args: argparse.Namespace, canonical: str) -> tuple[Any, float]:
    """This machine's CPU through LiteRT, in this process (no service)."""
    if args.device_class not in (None, "host-cpu"):
        raise UsageError(f"--local measures on host-cpu, not {args.device_class!r}")
    try:
        from mnas.build import BuildParams
        from services.latency.conversions import stats_to_proto
        from services.latency.oracle import HostOracle, MeasureSettings
        from services.latency.service import LatencyService
    except ImportError as err:
        raise UsageError(
            f"--local needs the latency extra (pip install 'mnas[latency]'): {err}"
        ) from None
    service = LatencyService([HostOracle()])
    measurement = service.measure(
        canonical,
        build=BuildParams(num_classes=args.classes, resolution=args.resolution, width=args.width),
        settings=MeasureSettings(
            warmup_runs=args.warmup_runs or 5, runs=args.runs or 20, threads=args.threads or 1
        ),
        device_class="host-cpu",
    )
    return stats_to_proto(measurement), measurement.export_seconds


# --- latency calibrate -------------------------------------------------------------------


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """Calibrate (or, with ``--recalibrate``, calibrate again) a host-cpu predictor."""
    import random

    from mnas.space import SearchSpace

    try:
        from services.latency.oracle import HostOracle
        from services.latency.predictor import LatencyPredictor, calibrate, recalibrate
    except ImportError as err:
        raise UsageError(f"calibrating needs the latency extra: {err}") from None
    oracle = HostOracle()
    if args.recalibrate is not None:
        old = LatencyPredictor.load(args.recalibrate, device_class=oracle.device_class)
        predictor = recalibrate(old, oracle)
        output = Path(args.output or args.recalibrate)
    else:
        if args.output is None:
            raise UsageError("give -o FILE for the new predictor (or --recalibrate FILE)")
        space = SearchSpace(resolution=args.resolution, width=args.width, num_classes=args.classes)
        rng = random.Random(args.seed)
        archs = [space.sample(rng) for _ in range(args.archs)]
        predictor = calibrate(
            oracle,
            archs,
            resolution=args.resolution,
            width=args.width,
            num_classes=args.classes,
            space=None if args.no_space else space,
            passes=args.passes,
        )
        output = Path(args.output)
    predictor.save(output)
    seconds = predictor.calibration.get("seconds", 0.0)
    print(
        f"wrote {output}: {len(predictor.kernels)} kernels of {predictor.device_class} "
        f"({predictor.build}), calibrated in {seconds:.0f}s; serve it with "
        f"python -m services.latency --predictor {output}"
    )
    return 0


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


# --- parser --------------------------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``devices`` and ``latency measure`` to the ``mnas`` parser."""

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--target",
            default=os.environ.get(LATENCY_TARGET_ENV, DEFAULT_LATENCY_TARGET),
            help=f"latency service address (env {LATENCY_TARGET_ENV}, default "
            f"{DEFAULT_LATENCY_TARGET}; `mnas up` prints it)",
        )
        add_connection_arguments(p, token=False)

    devices = commands.add_parser(
        "devices", help="the devices a latency service measures on, with their state"
    )
    target(devices)
    add_output_argument(devices, what="a list of devices")
    devices.set_defaults(run=_cmd_devices)

    latency = commands.add_parser("latency", help="measure latency")
    latency_commands = latency.add_subparsers(title="commands", metavar="COMMAND")
    measure = latency_commands.add_parser(
        "measure", help="export one architecture and time it on a device class"
    )
    add_arch_selector(measure)
    target(measure)
    measure.add_argument(
        "--device-class", default=None, help="e.g. host-cpu or a phone class (default host-cpu)"
    )
    measure.add_argument("--runs", type=int, default=0, help="timed runs (default 20)")
    measure.add_argument("--warmup-runs", type=int, default=0, help="warm-up runs (default 5)")
    measure.add_argument("--threads", type=int, default=0, help="interpreter threads (default 1)")
    measure.add_argument(
        "--local", action="store_true", help="measure on this machine's CPU, in this process"
    )
    add_output_argument(measure)
    measure.set_defaults(run=_cmd_measure)

    calibrate = latency_commands.add_parser(
        "calibrate",
        help="measure a predictor's kernels and correction on this machine's CPU "
        "(minutes; see docs/predictor.md)",
    )
    calibrate.add_argument("-o", "--output", default=None, help="predictor file to write")
    calibrate.add_argument(
        "--recalibrate",
        type=Path,
        default=None,
        metavar="FILE",
        help="repeat FILE's recorded calibration (written back to FILE unless -o)",
    )
    calibrate.add_argument(
        "--archs", type=int, default=40, help="random networks that fit the correction (40)"
    )
    calibrate.add_argument("--passes", type=int, default=2, help="measurement passes (2)")
    calibrate.add_argument(
        "--no-space",
        action="store_true",
        help="measure only the kernels of the calibration networks, not of the whole space",
    )
    calibrate.add_argument("--seed", type=int, default=0, help="which random networks (0)")
    calibrate.add_argument(
        "--width", type=float, default=DEFAULT_WIDTH, help=f"width multiplier ({DEFAULT_WIDTH})"
    )
    calibrate.add_argument(
        "--resolution",
        type=int,
        default=DEFAULT_RESOLUTION,
        help=f"input size ({DEFAULT_RESOLUTION})",
    )
    calibrate.add_argument(
        "--classes", type=int, default=DEFAULT_NUM_CLASSES, help=f"classes ({DEFAULT_NUM_CLASSES})"
    )
    calibrate.set_defaults(run=_cmd_calibrate)

    def show_help(_: argparse.Namespace) -> int:
        latency.print_help()
        return 2

    latency.set_defaults(run=show_help)

"""A calibrated predictor served beside the host CPU: over gRPC as ``host-cpu-predicted``,
in a search, and made and remade by ``mnas latency calibrate``; the robust figure in
every measured result.

The search calls the served latency service by its address (a real worker server), since
what it checks is that service answering a controller, every trial asked over the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.cli import main
from mnas.client import Client
from mnas.results import SearchState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, latency_pb2, latency_pb2_grpc
from services.common.server import RunningServer
from services.latency.oracle import HostOracle, MeasureSettings, fastest_mean
from services.latency.predictor import (
    KernelMeasurer,
    LatencyPredictor,
    PredictedLatency,
    calibrate,
)
from services.latency.server import make_server
from tests.latency.test_predictor import SIZES, TINY

QUICK = MeasureSettings(warmup_runs=1, runs=10)


@pytest.fixture
def predictor() -> LatencyPredictor:
    return calibrate(HostOracle(), [TINY], settings=QUICK, **SIZES)


@pytest.fixture
def server(predictor: LatencyPredictor) -> Iterator[RunningServer]:
    running = make_server(registry=CollectorRegistry(), predictors=[PredictedLatency(predictor)])
    yield running
    running.stop(0)


def request(device_class: str) -> latency_pb2.MeasureRequest:
    return latency_pb2.MeasureRequest(
        architecture=common_pb2.Architecture(canonical=TINY.canonical),
        build=common_pb2.BuildParams(
            resolution=SIZES["resolution"], num_classes=SIZES["num_classes"], width=1.0
        ),
        settings=common_pb2.LatencySettings(device_class=device_class, runs=10),
    )


def test_the_predictor_is_a_device_class_of_the_service(
    server: RunningServer, predictor: LatencyPredictor
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = latency_pb2_grpc.LatencyStub(channel)
        devices = stub.ListDevices(latency_pb2.ListDevicesRequest()).devices
        predicted = stub.Measure(request("host-cpu-predicted"), timeout=60)
        measured = stub.Measure(request("host-cpu"), timeout=60)
    assert {d.device_class for d in devices} == {"host-cpu", "host-cpu-predicted"}
    expected = predictor.predict(TINY, **SIZES)
    assert predicted.stats.samples_seconds == [pytest.approx(expected)]
    assert predicted.stats.robust_seconds == pytest.approx(expected)
    assert predicted.export_seconds == 0  # nothing exported, nothing run
    assert predicted.stats.device.startswith("predictor (")
    # A measured result reports the fastest-tenth mean beside the median.
    samples = list(measured.stats.samples_seconds)
    assert len(samples) == 10
    assert measured.stats.robust_seconds == pytest.approx(fastest_mean(samples, 0.1))
    assert measured.stats.robust_seconds <= measured.stats.median_seconds


def test_a_search_on_the_predicted_class(
    server: RunningServer, predictor: LatencyPredictor, tmp_path: Path
) -> None:
    """The controller takes latencies from the predictor and records none in its store;
    the predictor refuses a network at sizes it was not calibrated for, or, with a live
    oracle attached, measures the kernels it lacks."""
    from tests.common.fake_trainer import ServedTraining
    from tests.common.local_workers import instant_training
    from tests.controller.stack import controller_stack
    from tests.controller.test_duplicates import SPEC

    spec = parse_spec(
        SPEC % {"strategy": "random", "policy": "DUPLICATE_POLICY_RETRAIN"}
        + "\nlatency: {device_class: host-cpu-predicted}\n"
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = latency_pb2_grpc.LatencyStub(channel)
        other = request("host-cpu-predicted")
        other.build.resolution = 28
        with pytest.raises(grpc.RpcError) as info:
            stub.Measure(other, timeout=60)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "was not calibrated" in str(info.value.details())
    predictor.measure_unseen = KernelMeasurer(HostOracle(), QUICK)
    with (
        controller_stack(
            tmp_path, ServedTraining(instant_training), latency=server.address
        ) as stack,
        Client(stack.address) as client,
    ):
        search = client.submit(spec)
        final = search.wait(timeout=120)
        trials = list(search.trials())
    assert final.state is SearchState.SUCCEEDED, final.error
    assert all(t.latency and t.latency.device_class == "host-cpu-predicted" for t in trials)
    assert all(t.latency and t.latency.predicted for t in trials)
    assert all(t.latency_worker == server.address for t in trials)  # asked every time


def test_mnas_latency_calibrate_writes_and_rewrites_a_predictor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "host.json"
    sizes = ["--resolution", "32", "--width", "0.5", "--classes", "10"]
    assert main(["latency", "calibrate", "-o", str(path), "--archs", "3", "--passes", "1",
                 "--no-space", *sizes]) == 0  # fmt: skip
    assert "serve it with python -m services.latency --predictor" in capsys.readouterr().out
    first = LatencyPredictor.load(path, device_class="host-cpu")
    assert len(first.calibration["architectures"]) == 3
    assert main(["latency", "calibrate", "--recalibrate", str(path)]) == 0
    again = LatencyPredictor.load(path, device_class="host-cpu")
    assert again.calibration["architectures"] == first.calibration["architectures"]
    assert set(again.kernels) == set(first.kernels)
    assert json.loads(path.read_text())["created"] >= json.loads(path.read_text())["created"]
    assert main(["latency", "calibrate"]) == 2
    assert "give -o FILE" in capsys.readouterr().err

"""The trainer over real gRPC on loopback: streams, status codes, capacity, metrics, health."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer
from services.trainer.isolation import TrainingError
from services.trainer.server import (
    SERVICE_NAME,
    TrainerConfig,
    make_server,
    status_for,
)
from services.trainer.training import TrainingCancelled

TINY = (
    "stem:8 r1_k3_s11_e1_i8_o8 r1_k3_s22_e3_i8_o16 r1_k3_s22_e3_i16_o24_se0.25 "
    "head:64 act:relu dropout:0"
)
WAIT_SECONDS = 30.0
STOP_WITHIN_SECONDS = 10.0
EXIT_WITHIN_SECONDS = 30.0


@dataclass
class Trainer:
    running: RunningServer
    registry: CollectorRegistry
    channel: grpc.Channel
    stub: trainer_pb2_grpc.TrainerStub

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


def start(config: TrainerConfig) -> Trainer:
    registry = CollectorRegistry()
    running = make_server(config, registry)
    channel = grpc.insecure_channel(running.address)
    return Trainer(running, registry, channel, trainer_pb2_grpc.TrainerStub(channel))


@pytest.fixture
def trainer() -> Iterator[Trainer]:
    t = start(TrainerConfig(max_concurrent=1))
    yield t
    t.channel.close()
    t.running.stop(grace=1.0)


def request(
    canonical: str = TINY,
    *,
    steps: int = 0,
    dataset: str = "fashion-mnist",
    num_classes: int = 10,
) -> trainer_pb2.TrainRequest:
    return trainer_pb2.TrainRequest(
        architecture=common_pb2.Architecture(canonical=canonical),
        build=common_pb2.BuildParams(resolution=28, num_classes=num_classes, width=1.0),
        training=common_pb2.Training(
            dataset=dataset,
            epochs=1,
            steps=steps,
            batch_size=32,
            learning_rate=0.05,
            seed=1,
            train_examples=1000,
            validation_examples=500,
        ),
    )


def wait_until(predicate: Callable[[], bool], timeout: float = STOP_WITHIN_SECONDS) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.05)
    return True


def details(err: grpc.RpcError) -> str:
    return str(err.details())


class Background:
    """Consume a Train stream on a thread; ``first`` is set at the first response."""

    def __init__(self, call: grpc.CallIterator[trainer_pb2.TrainResponse]) -> None:
        self.call = call
        self.first = threading.Event()
        self.responses: list[trainer_pb2.TrainResponse] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            for response in self.call:
                self.responses.append(response)
                self.first.set()
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.first.set()


def test_train_streams_progress_then_one_result(trainer: Trainer) -> None:
    responses = list(trainer.stub.Train(request(), timeout=120))
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[-1] == "result"
    assert kinds.count("result") == 1
    assert set(kinds[:-1]) == {"progress"}
    result = responses[-1].result
    last = responses[-2].progress
    assert last.step == last.total_steps == 31
    assert result.samples_seen == last.samples_seen == 31 * 32
    assert result.accuracy > 0.1
    assert result.seconds > 0
    assert trainer.sample("mnas_trainer_jobs_total", outcome="completed") == 1
    assert trainer.sample("mnas_trainer_samples_total") == result.samples_seen
    assert trainer.sample("mnas_trainer_job_seconds_count") == 1
    assert trainer.sample("mnas_trainer_jobs_in_flight") == 0
    assert (
        trainer.sample(
            "grpc_server_handled_total",
            grpc_type="server_stream",
            grpc_service=SERVICE_NAME,
            grpc_method="Train",
            grpc_code="OK",
        )
        == 1
    )


def test_back_to_back_trainings_fit_one_slot(trainer: Trainer) -> None:
    for _ in range(3):
        responses = list(trainer.stub.Train(request(steps=2), timeout=60))
        assert responses[-1].WhichOneof("event") == "result"
    assert trainer.sample("mnas_trainer_jobs_total", outcome="completed") == 3


@pytest.mark.parametrize(
    ("canonical", "detail"),
    [
        ("r1_k3_s11_e1_i8_o8_bogus", "architecture.canonical: block"),
        ("", "architecture.canonical: empty"),
        ("stem:x r1_k3_s11_e1_i8_o8", "architecture.canonical"),
    ],
)
def test_malformed_architecture_is_invalid_argument(
    trainer: Trainer, canonical: str, detail: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(trainer.stub.Train(request(canonical), timeout=30))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert detail in details(info.value)


def test_unknown_dataset_is_not_found_naming_the_field(trainer: Trainer) -> None:
    """NOT_FOUND, not INVALID_ARGUMENT: another trainer may serve it (the controller
    retries the trial elsewhere)."""
    with pytest.raises(grpc.RpcError) as info:
        list(trainer.stub.Train(request(dataset="/nonexistent/mnas-data"), timeout=30))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "training.dataset" in details(info.value)
    assert "/nonexistent/mnas-data" in details(info.value)
    # Refused with the request's other checks, before it takes a slot: no job ran.
    assert trainer.sample("mnas_trainer_jobs_total", outcome="failed") == 0
    assert trainer.sample("mnas_trainer_jobs_in_flight") == 0


def test_too_few_classes_is_invalid_argument(trainer: Trainer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(trainer.stub.Train(request(num_classes=3), timeout=30))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "build.num_classes" in details(info.value)


def test_bad_training_field_is_invalid_argument(trainer: Trainer) -> None:
    bad = request()
    bad.training.steps = -4
    with pytest.raises(grpc.RpcError) as info:
        list(trainer.stub.Train(bad, timeout=30))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "training.steps" in details(info.value)


def test_over_capacity_is_resource_exhausted_and_cancel_frees_the_slot(
    trainer: Trainer,
) -> None:
    long = Background(trainer.stub.Train(request(steps=1_000_000), timeout=300))
    assert long.first.wait(WAIT_SECONDS) and long.error is None
    capacity = trainer.stub.GetCapacity(common_pb2.GetCapacityRequest(), timeout=10)
    assert (capacity.max_concurrent, capacity.in_flight) == (1, 1)
    assert re.fullmatch(r"cpu x\d+ \(torch .+\)", capacity.hardware)
    assert trainer.sample("mnas_trainer_jobs_in_flight") == 1

    with pytest.raises(grpc.RpcError) as info:
        list(trainer.stub.Train(request(steps=2), timeout=30))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "busy" in details(info.value)

    long.call.cancel()  # type: ignore[no-untyped-call]
    long.thread.join(STOP_WITHIN_SECONDS)
    assert long.error is not None and long.error.code() is grpc.StatusCode.CANCELLED
    assert wait_until(lambda: trainer.sample("mnas_trainer_jobs_in_flight") == 0), (
        f"training still running {STOP_WITHIN_SECONDS}s after the client cancelled"
    )
    assert trainer.sample("mnas_trainer_jobs_total", outcome="cancelled") == 1
    assert trainer.stub.GetCapacity(common_pb2.GetCapacityRequest()).in_flight == 0
    responses = list(trainer.stub.Train(request(steps=2), timeout=60))
    assert responses[-1].WhichOneof("event") == "result"


def test_client_deadline_stops_the_training(trainer: Trainer) -> None:
    long = Background(trainer.stub.Train(request(steps=1_000_000), timeout=3))
    long.thread.join(WAIT_SECONDS)
    assert long.error is not None
    assert long.error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(
        lambda: trainer.sample("mnas_trainer_jobs_total", outcome="cancelled") == 1
    ), f"training still running {STOP_WITHIN_SECONDS}s after the deadline"
    assert trainer.sample("mnas_trainer_jobs_in_flight") == 0


def test_stopping_the_server_ends_running_trainings_with_unavailable() -> None:
    t = start(TrainerConfig(max_concurrent=2))
    try:
        long = Background(t.stub.Train(request(steps=1_000_000), timeout=300))
        assert long.first.wait(WAIT_SECONDS) and long.error is None
        stopper = threading.Thread(target=t.running.stop, args=(5.0,), daemon=True)
        stopper.start()
        long.thread.join(STOP_WITHIN_SECONDS)
        assert not long.thread.is_alive()
        assert long.error is not None
        assert long.error.code() is grpc.StatusCode.UNAVAILABLE
        stopper.join(STOP_WITHIN_SECONDS)
        assert not stopper.is_alive()
        assert t.sample("mnas_trainer_jobs_total", outcome="cancelled") == 1
    finally:
        t.channel.close()
        t.running.stop(grace=0)


def test_during_the_drain_running_trainings_go_on_and_new_ones_are_refused() -> None:
    t = start(TrainerConfig(max_concurrent=2, drain_seconds=120.0))
    try:
        long = Background(t.stub.Train(request(steps=1_000_000), timeout=300))
        assert long.first.wait(WAIT_SECONDS) and long.error is None
        for callback in t.running.on_stop:  # what RunningServer.stop runs first
            callback()
        with pytest.raises(grpc.RpcError) as info:
            list(t.stub.Train(request(steps=2), timeout=30))
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in details(info.value)
        seen = len(long.responses)
        assert wait_until(lambda: len(long.responses) > seen, WAIT_SECONDS)
        assert long.error is None
        long.call.cancel()  # type: ignore[no-untyped-call]
        assert wait_until(lambda: t.sample("mnas_trainer_jobs_in_flight") == 0)
    finally:
        t.channel.close()
        t.running.stop(grace=0)


def test_health_reports_serving(trainer: Trainer) -> None:
    health = health_pb2_grpc.HealthStub(trainer.channel)
    for service in (SERVICE_NAME, ""):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_capacity_reports_the_configured_maximum() -> None:
    t = start(TrainerConfig(max_concurrent=3, threads=2))
    try:
        reply = t.stub.GetCapacity(common_pb2.GetCapacityRequest(), timeout=10)
        assert (reply.max_concurrent, reply.in_flight) == (3, 0)
        assert reply.hardware.startswith("cpu x2 (torch ")
    finally:
        t.channel.close()
        t.running.stop(grace=0)


def test_status_table() -> None:
    """Only invalid input is INVALID_ARGUMENT (which the controller does not retry); a bare
    ValueError from the training is an internal error, retried like any failure."""
    assert status_for(InvalidInput("dataset: directory not found: /x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "training.dataset: directory not found: /x",
    )
    assert status_for(InvalidInput("resolution: bad"))[1] == "build.resolution: bad"
    code, details = status_for(ValueError("math domain error"))
    assert code is grpc.StatusCode.INTERNAL
    assert details == "internal error: ValueError: math domain error"
    assert status_for(TrainingError("training failed: x"))[0] is grpc.StatusCode.INTERNAL
    assert status_for(TrainingCancelled("stop"))[0] is grpc.StatusCode.CANCELLED
    code, details = status_for(RuntimeError("x" * 1000))
    assert code is grpc.StatusCode.INTERNAL
    assert details.startswith("internal error: RuntimeError: x")
    assert len(details) <= 300


def test_main_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-m",
            "services.trainer",
            "--port",
            "0",
            "--grace",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stderr or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        port = None
        deadline = time.monotonic() + WAIT_SECONDS
        while port is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            match = re.search(r"trainer bound to .*:(\d+)", line)
            port = int(match.group(1)) if match else None
        assert port, "no 'trainer bound to' log line"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        # A bound for a hang, not a speed check: the process stops within its grace (2 s),
        # then tears down torch and its fork server, 1-5 s here depending on the load.
        try:
            status = proc.wait(timeout=EXIT_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread is
            proc.wait(10)
            status = None
        log = "".join(lines.get() for _ in range(lines.qsize()))
        assert status == 0, f"exit {status} after SIGTERM; its log after start-up:\n{log}"
        assert proc.stdout is not None and proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Each training runs in a child process: a trial that runs out of memory, raises or
outlives its time limit fails alone, and the same trainer completes the next one."""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
import torch

from mnas.arch import decode
from mnas.v1 import trainer_pb2
from services.trainer.isolation import ChildJob, TrialTimedOut, run_isolated
from services.trainer.server import TrainerConfig
from services.trainer.training import Progress, TrainingCancelled, TrainingConfig
from tests.trainer.test_server import TINY, Trainer, details, request, start

MEMORY_LIMIT = 512 * 2**20


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    """One trainer for the whole module, so each test's failure must leave it serving;
    it reads data sets by path under the tests' temporary directory."""
    t = start(
        TrainerConfig(
            max_concurrent=1,
            threads=1,
            memory_limit_bytes=MEMORY_LIMIT,
            data_roots=(tmp_path_factory.getbasetemp(),),
        )
    )
    yield t
    t.channel.close()
    t.running.stop(grace=1.0)


def train(trainer: Trainer, message: trainer_pb2.TrainRequest) -> list[trainer_pb2.TrainResponse]:
    return list(trainer.stub.Train(message, timeout=120))


def assert_next_trial_completes(trainer: Trainer) -> None:
    responses = train(trainer, request(steps=3))
    assert responses[-1].HasField("result")
    assert 0.0 <= responses[-1].result.accuracy <= 1.0


def test_a_trial_past_its_memory_limit_fails_alone(trainer: Trainer) -> None:
    big = request(steps=2)
    big.training.batch_size = 512
    big.build.resolution = 224  # activations of several GiB at this batch
    with pytest.raises(grpc.RpcError) as info:
        train(trainer, big)
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert "out of memory" in details(info.value)
    assert "512 MiB" in details(info.value)
    assert_next_trial_completes(trainer)
    assert trainer.sample("mnas_trainer_jobs_total", outcome="failed") >= 1


def test_a_trial_that_raises_fails_alone_naming_the_field(trainer: Trainer) -> None:
    # Fashion-MNIST has 10 classes: the child refuses to build a 5-class head.
    with pytest.raises(grpc.RpcError) as info:
        train(trainer, request(steps=2, num_classes=5))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(info.value).startswith("build.num_classes:")
    assert_next_trial_completes(trainer)


def test_an_unexpected_error_in_a_trial_is_internal_and_not_bad_input(
    trainer: Trainer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A data set that is broken on this trainer's disk (a truncated IDX file) raises a
    ValueError deep in the loader: the request was fine, so the answer is INTERNAL, which
    the controller retries (on another trainer), not INVALID_ARGUMENT, which it does not."""
    broken = tmp_path_factory.mktemp("broken")
    (broken / "train-images-idx3-ubyte").write_bytes(b"\x00\x00")
    (broken / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(grpc.RpcError) as info:
        train(trainer, request(steps=2, dataset=str(broken)))
    assert info.value.code() is grpc.StatusCode.INTERNAL, details(info.value)
    assert "too short for an IDX header" in details(info.value)
    assert_next_trial_completes(trainer)


def test_a_trial_past_its_timeout_fails_alone(trainer: Trainer) -> None:
    slow = request(steps=1_000_000)
    slow.training.timeout_seconds = 2.0
    with pytest.raises(grpc.RpcError) as info:
        train(trainer, slow)
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert "time limit of 2s" in details(info.value)
    assert_next_trial_completes(trainer)


def test_weights_follow_the_result_when_asked_for(trainer: Trainer) -> None:
    message = request(steps=2)
    message.training.return_weights = True
    responses = train(trainer, message)
    kinds = [r.WhichOneof("event") for r in responses]
    first_weights = kinds.index("weights")
    assert kinds[first_weights - 1] == "result"
    assert set(kinds[first_weights:]) == {"weights"}
    chunks = [r.weights for r in responses[first_weights:]]
    data = b"".join(c.data for c in chunks)
    assert len(data) == chunks[0].total_bytes
    state = torch.load(io.BytesIO(data), weights_only=True)
    assert any(name.endswith("running_mean") for name in state)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def endless_job() -> ChildJob:
    """A training of a million steps: it ends only when it is ended."""
    config = TrainingConfig(
        steps=1_000_000, batch_size=32, train_examples=1000, validation_examples=500
    )
    return ChildJob(
        arch=decode(TINY), num_classes=10, resolution=28, width=1.0, config=config, threads=1
    )


def test_cancelling_kills_the_child_before_returning() -> None:
    job = endless_job()
    seen: list[Progress] = []
    others = set(multiprocessing.active_children())  # other tests' (a controller's learner)
    with pytest.raises(TrainingCancelled):
        run_isolated(job, on_progress=seen.append, cancelled=lambda: bool(seen))
    assert seen  # it trained until the first report, then was cancelled
    assert set(multiprocessing.active_children()) <= others


def test_timeout_names_the_spec_field() -> None:
    job = endless_job()
    others = set(multiprocessing.active_children())
    with pytest.raises(TrialTimedOut, match=r"training\.timeout_seconds"):
        run_isolated(job, timeout_seconds=0.5)
    assert set(multiprocessing.active_children()) <= others


def test_the_fork_server_decodes_preloaded_data_sets_once() -> None:
    """Importing the warm-up module with the variable set decodes the named sets (in the
    fork server, before any child exists); an unknown one is only a warning."""
    code = "from services.trainer import data, warm; print(data._load.cache_info().currsize)"
    env = {**os.environ, "MNAS_TRAINER_PRELOAD": "fashion-mnist,/nonexistent/mnas-data"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "1"
    assert "could not preload data set '/nonexistent/mnas-data'" in result.stderr

"""End to end: the four services as separate processes on loopback, a real search.

Real training (Fashion-MNIST subsets), real LiteRT latency on this machine's CPU, a real
store (SQLite, then PostgreSQL), driven through the SDK.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy

from mnas.client import Client, InvalidSpec
from mnas.local import LocalStack, Process
from mnas.results import EventKind, LatencyFigure, SearchState, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2_grpc
from services.controller.store import Store
from services.reward.rewards import Kind, Objective, reward
from tests.common.grpc_helpers import health_status, reflected_services

POSTGRES = os.environ.get(
    "MNAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

SPEC = """
name: e2e
seed: 3
space: {preset: small-images, resolution: 28, width: 0.5}  # total stride 8: learns at 28 px
objective: {kind: soft, target_latency_seconds: 0.002}
budget: {max_trials: %(trials)d, parallel_trials: %(parallel)d, max_attempts: 3}
training: {train_examples: %(examples)d, validation_examples: 500, epochs: 1, batch_size: 32}
latency: {warmup_runs: 2, runs: 5}
reference: none
"""


def small_spec(trials: int = 3, parallel: int = 1, examples: int = 1000) -> common_pb2.SearchSpec:
    return parse_spec(SPEC % {"trials": trials, "parallel": parallel, "examples": examples})


def check_search(client: Client, spec: common_pb2.SearchSpec, store_url: str) -> None:
    search = client.submit(spec)
    events = list(search.watch(timeout=600))
    final = search.refresh()
    assert final.state is SearchState.SUCCEEDED, final.error
    budget = spec.budget.max_trials
    finished = [e.trial for e in events if e.kind is EventKind.TRIAL_FINISHED]
    assert events[0].kind is EventKind.SNAPSHOT
    assert events[-1].kind is EventKind.SEARCH_FINISHED
    assert sorted(t.number for t in finished if t is not None) == list(range(budget))
    trials = list(search.trials())
    assert len(trials) == budget
    objective = Objective.of(Kind.SOFT, 0.002)
    for trial in trials:
        assert trial.state is TrialState.COMPLETED, trial.error
        assert trial.accuracy is not None and trial.accuracy > 0.1  # chance is 0.1
        assert trial.proto.training.samples_seen >= 900  # whole batches of 1000 examples
        latency = trial.latency
        assert latency is not None
        assert len(latency.proto.samples_seconds) == 5
        assert latency.device_class == "host-cpu"
        assert 0 < latency.min_seconds <= latency.median_seconds
        # The reward is computed from the robust figure.
        assert latency.figure is LatencyFigure.ROBUST
        assert latency.seconds == latency.proto.robust_seconds > 0
        assert trial.reward == pytest.approx(
            reward(trial.accuracy, latency.seconds, objective), rel=1e-12
        )
    best = search.best(1)[0]
    assert best.reward == max(t.reward or 0.0 for t in trials)
    assert search.pareto()
    # The store holds exactly the budgeted trials.
    store = Store(store_url, schema=None)
    try:
        assert store.count_trials(search.id) == budget
        assert store.count_trials(search.id, states=[common_pb2.TRIAL_STATE_COMPLETED]) == budget
    finally:
        store.close()


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    with LocalStack(workdir=workdir, store=str(workdir / "mnas.db"), trainers=2) as stack:
        yield stack


def test_search_end_to_end_on_sqlite(sqlite_stack: LocalStack) -> None:
    with Client(sqlite_stack.controller) as client:
        check_search(client, small_spec(trials=3, parallel=2), f"sqlite:///{sqlite_stack.store}")


@pytest.mark.slow
def test_several_searches_at_once_and_the_cli_reads_them(
    sqlite_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnas.cli import main

    with Client(sqlite_stack.controller) as client:
        searches = [client.submit(small_spec(trials=1, examples=300)) for _ in range(2)]
        finals = [s.wait(timeout=300) for s in searches]
    assert [f.state for f in finals] == [SearchState.SUCCEEDED] * 2
    target = ["--target", sqlite_stack.controller]
    capsys.readouterr()
    assert main(["list", *target]) == 0
    listed = capsys.readouterr().out
    assert all(s.id in listed for s in searches)
    for command in ("trials", "best", "watch"):
        assert main([command, searches[0].id, *target]) == 0, command
        out = capsys.readouterr().out
        assert "completed" in out or "reward" in out, (command, out)
    assert main(["cancel", searches[1].id, *target]) == 0  # already finished: unchanged
    assert "succeeded" in capsys.readouterr().out
    assert main(["best", "no-such-search", *target]) == 4  # not found
    assert "no search 'no-such-search'" in capsys.readouterr().err


def test_health_and_reflection_of_every_service(sqlite_stack: LocalStack) -> None:
    names = {
        "controller": "mnas.v1.Controller",
        "trainer-0": "mnas.v1.Trainer",
        "trainer-1": "mnas.v1.Trainer",
        "latency": "mnas.v1.Latency",
        "reward": "mnas.v1.Reward",
    }
    listed: set[str] = set()
    for process in sqlite_stack.processes:
        assert health_status(process.address, names[process.name]) == "SERVING"
        listed.update(reflected_services(process.address))
    assert set(names.values()) <= listed


def test_bad_spec_is_refused_and_nothing_is_stored(sqlite_stack: LocalStack) -> None:
    store = Store(f"sqlite:///{sqlite_stack.store}")
    try:
        before = len(store.list_searches())
        with Client(sqlite_stack.controller) as client, pytest.raises(InvalidSpec) as info:
            client.submit(parse_spec(SPEC % {"trials": 2, "parallel": 3, "examples": 10}))
        assert "spec.budget.parallel_trials" in str(info.value)
        assert len(store.list_searches()) == before
    finally:
        store.close()


def _in_flight(process: Process) -> int:
    with grpc.insecure_channel(process.address) as channel:
        response = trainer_pb2_grpc.TrainerStub(channel).GetCapacity(
            common_pb2.GetCapacityRequest(), timeout=5
        )
    return int(response.in_flight)


@pytest.mark.slow
def test_trainer_killed_mid_trial_is_retried_on_the_other(sqlite_stack: LocalStack) -> None:
    """SIGKILL the trainer running a trial: the trial moves to the other, nothing is lost."""
    with Client(sqlite_stack.controller) as client:
        search = client.submit(small_spec(trials=2, parallel=1, examples=6000))
        killed: Process | None = None
        trainers = [p for p in sqlite_stack.processes if p.name.startswith("trainer")]
        for event in search.watch(timeout=600):
            if killed is None and event.kind is EventKind.TRIAL_STARTED:
                # Poll (bounded) until a trainer reports the job, then kill that trainer.
                deadline = time.monotonic() + 120
                while killed is None and time.monotonic() < deadline:
                    busy = [p for p in trainers if p.alive() and _in_flight(p) > 0]
                    if busy:
                        killed = busy[0]
                        killed.kill()
                    else:
                        time.sleep(0.05)  # pacing the poll, not synchronizing
        assert killed is not None
        final = search.refresh()
        assert final.state is SearchState.SUCCEEDED, final.error
        trials = list(search.trials())
        assert [t.state for t in trials] == [TrialState.COMPLETED] * 2
        (retried,) = [t for t in trials if t.attempts >= 2]
        assert retried.trainer != killed.address
        assert {t.trainer for t in trials} <= {p.address for p in trainers}


@pytest.mark.slow
def test_cancel_stops_running_trials(sqlite_stack: LocalStack) -> None:
    """Cancelling mid-training ends the search CANCELLED and frees the trainers."""
    with Client(sqlite_stack.controller) as client:
        search = client.submit(small_spec(trials=4, parallel=2, examples=20000))
        for event in search.watch(timeout=300):
            if event.kind is EventKind.TRIAL_STARTED:
                break
        final = search.cancel()
        assert final.state is SearchState.CANCELLED
        trials = list(search.trials())
        assert trials
        assert {t.state for t in trials} <= {TrialState.CANCELLED, TrialState.COMPLETED}
        assert TrialState.CANCELLED in {t.state for t in trials}
    trainers = [p for p in sqlite_stack.processes if p.name.startswith("trainer") and p.alive()]
    deadline = time.monotonic() + 30
    while any(_in_flight(p) for p in trainers) and time.monotonic() < deadline:
        time.sleep(0.1)  # pacing the poll while trainers stop
    assert not any(_in_flight(p) for p in trainers)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    if os.environ.get("MNAS_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("MNAS_TEST_SKIP_POSTGRES=1")
    schema = f"mnas_e2e_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(POSTGRES)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.mark.slow
def test_search_end_to_end_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with (
        LocalStack(workdir=tmp_path, store=postgres_url, trainers=1) as stack,
        Client(stack.controller) as client,
    ):
        check_search(client, small_spec(trials=2, parallel=1), postgres_url)

"""A pareto objective end to end over the SDK and the CLI: no target latency, the tpe
strategy told each trial's accuracy and latency, and the front as the search's result.

A real controller on loopback, its workers in process: the latency service's core
(LiteRT on this CPU), the reward function, and a training that answers at once with an
accuracy that depends on the architecture (what is under test is what the controller, the
SDK and the CLI do with a front search, not what a network learns).
``tests/e2e/test_cli_search.py`` runs one with real training.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mnas.client import Client
from mnas.results import SearchState, Trial, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, trainer_pb2
from tests.common.local_workers import InProcessWorkers
from tests.controller.stack import Stack, local_stack

MNAS = str(Path(sys.executable).parent / "mnas")
WAIT = 300.0  # seconds: only ever reached when a test is about to fail
TRIALS = 12
SPEC = f"""
name: front
seed: 4
strategy: tpe
space: {{preset: small-images, resolution: 28, width: 0.25}}
objective: {{kind: pareto}}
budget: {{max_trials: {TRIALS}, parallel_trials: 2}}
latency: {{warmup_runs: 1, runs: 3}}
reference: none
"""


def scoring_training(
    request: trainer_pb2.TrainRequest,
    report: Callable[[common_pb2.TrainProgress], None],
    aborted: threading.Event,
) -> tuple[common_pb2.TrainResult, bytes | None]:
    """Answers at once; the accuracy is a fixed function of the architecture."""
    digest = hashlib.sha256(request.architecture.canonical.encode()).digest()
    accuracy = 0.5 + digest[0] / 1000
    return common_pb2.TrainResult(accuracy=accuracy, loss=1.0, samples_seen=1), None


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    workers = InProcessWorkers(scoring_training, trainer_capacity=4)
    with local_stack(tmp_path_factory.mktemp("pareto"), workers) as stack:
        with Client(stack.address) as client:
            search = client.submit(parse_spec(SPEC))
            final = search.wait(timeout=WAIT)
        assert final.state is SearchState.SUCCEEDED, final.error
        yield stack, search.id


def completed(stack: Stack, search_id: str) -> list[Trial]:
    with Client(stack.address) as client:
        return client.search(search_id).completed()


def dominated(trial: Trial, by: Trial) -> bool:
    a, b = (
        (trial.accuracy or 0.0, trial.latency_seconds or 0.0),
        (
            by.accuracy or 0.0,
            by.latency_seconds or 0.0,
        ),
    )
    return b[0] >= a[0] and b[1] <= a[1] and b != a


def test_the_search_runs_without_a_target_and_scores_by_accuracy(
    finished: tuple[Stack, str],
) -> None:
    stack, search_id = finished
    with Client(stack.address) as client:
        search = client.search(search_id)
        info = search.refresh()
        trials = list(search.trials())
    assert info.spec.objective.kind == common_pb2.OBJECTIVE_KIND_PARETO
    assert info.spec.objective.target_latency_seconds == 0
    assert not info.spec.objective.HasField("alpha")
    assert [t.state for t in trials] == [TrialState.COMPLETED] * TRIALS
    assert all(t.reward == t.accuracy for t in trials)
    assert all(t.latency_seconds and t.latency_seconds > 0 for t in trials)


def test_the_front_is_every_trial_no_other_beats_on_both(finished: tuple[Stack, str]) -> None:
    stack, search_id = finished
    with Client(stack.address) as client:
        front = client.search(search_id).pareto()
    trials = completed(stack, search_id)
    assert front
    numbers = {t.number for t in front}
    for trial in trials:
        beaten = any(dominated(trial, other) for other in trials)
        assert beaten is (trial.number not in numbers), trial.number
    latencies = [t.latency_seconds or 0.0 for t in front]
    assert latencies == sorted(latencies)


def mnas(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MNAS_TARGET": stack.address, "COLUMNS": "200"}
    return subprocess.run(
        [MNAS, *argv], capture_output=True, text=True, timeout=WAIT, env=env, check=False
    )


def test_mnas_best_shows_the_front_as_the_result(finished: tuple[Stack, str]) -> None:
    stack, search_id = finished
    with Client(stack.address) as client:
        front = [t.number for t in client.search(search_id).pareto()]
    table = mnas(stack, "best", search_id)
    assert table.returncode == 0, table.stderr
    assert f"Pareto front: accuracy vs latency ({len(front)} trials)" in table.stdout
    assert "by reward" not in table.stdout
    data = mnas(stack, "best", search_id, "-o", "json")
    assert data.returncode == 0, data.stderr
    assert [t["number"] for t in json.loads(data.stdout)["pareto"]] == front


def test_the_report_shows_the_front_and_no_target(
    finished: tuple[Stack, str], tmp_path: Path
) -> None:
    stack, search_id = finished
    out = tmp_path / "report.html"
    result = mnas(stack, "report", search_id, "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "pareto: the front of accuracy against latency, no target" in html
    assert "no target latency: the front is the result" in html
    assert "<h2>Pareto front: " in html
    assert "Best " not in html
    assert "target T =" not in html


def test_a_pareto_search_with_a_strategy_that_climbs_one_reward_is_refused(
    finished: tuple[Stack, str],
) -> None:
    stack, _ = finished
    from mnas.client import InvalidSpec

    with Client(stack.address) as client, pytest.raises(InvalidSpec) as err:
        client.submit(parse_spec(SPEC.replace("strategy: tpe", "strategy: evolution")))
    assert "strategy: evolution climbs one reward and cannot look for a front" in str(err.value)

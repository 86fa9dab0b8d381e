"""The search commands' results for scripts: ``-o json|yaml`` on list, trials, best,
submit, cancel, and ``watch`` as JSON lines or, in a pipe, one line per trial as it ends.

The CLI runs as a user runs it, a subprocess; the controller is real, on loopback, its
workers in process: the latency service's core, the reward function, and a training that
answers when the test lets it (what is under test is what the CLI prints, not what the
trainer learns).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
import yaml

from mnas.v1 import common_pb2, trainer_pb2
from tests.common.local_workers import InProcessWorkers
from tests.common.tiny_spec import tiny_spec, tiny_text
from tests.controller.stack import Stack, local_stack

MNAS = str(Path(sys.executable).parent / "mnas")
WAIT = 120.0  # seconds: only ever reached when a test is about to fail


class PacedTraining:
    """Each training waits for a permit from the test (all at once when ``free``)."""

    def __init__(self, *, free: bool) -> None:
        self.permits = threading.Semaphore(1_000_000 if free else 0)

    def __call__(
        self,
        request: trainer_pb2.TrainRequest,
        report: Callable[[common_pb2.TrainProgress], None],
        aborted: threading.Event,
    ) -> tuple[common_pb2.TrainResult, bytes | None]:
        while not self.permits.acquire(timeout=0.5):  # polls whether the call was aborted
            if aborted.is_set():
                break
        return common_pb2.TrainResult(accuracy=0.6, loss=1.0, samples_seen=1), None


def read_line(stream: IO[str], timeout: float = WAIT) -> str:
    """The next line of a child's output; fails the test rather than hang on it."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line in {timeout:.0f} s"
    return stream.readline()


def mnas(stack: Stack, *argv: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MNAS_TARGET": stack.address}
    return subprocess.run(
        [MNAS, *argv], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """A controller with one search of three trials, finished."""
    workers = InProcessWorkers(PacedTraining(free=True))
    with local_stack(tmp_path_factory.mktemp("cli"), workers) as stack:
        search = stack.controller.submit(tiny_spec("scripted", seed=3, trials=3))
        final = stack.controller.wait(search.id, timeout=WAIT)
        assert final.state == common_pb2.SEARCH_STATE_SUCCEEDED, final.error
        yield stack, search.id


@pytest.mark.parametrize(
    "argv",
    [["list"], ["trials", "ID"], ["best", "ID", "--top", "2"]],
    ids=["list", "trials", "best"],
)
def test_results_parse_as_json_and_as_yaml_alike(
    finished: tuple[Stack, str], argv: list[str]
) -> None:
    stack, search_id = finished
    argv = [search_id if a == "ID" else a for a in argv]
    as_json = mnas(stack, *argv, "-o", "json")
    as_yaml = mnas(stack, *argv, "-o", "yaml")
    assert as_json.returncode == 0 and as_yaml.returncode == 0, as_json.stderr + as_yaml.stderr
    assert json.loads(as_json.stdout) == yaml.safe_load(as_yaml.stdout)


def test_json_results_name_their_fields(finished: tuple[Stack, str]) -> None:
    stack, search_id = finished
    searches = json.loads(mnas(stack, "list", "-o", "json").stdout)
    [search] = [s for s in searches if s["id"] == search_id]
    assert search["state"] == "succeeded"
    assert search["trials_completed"] == 3
    trials = json.loads(mnas(stack, "trials", search_id, "-o", "json").stdout)
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert {t["state"] for t in trials} == {"completed"}
    assert all(t["accuracy"] == pytest.approx(0.6) for t in trials)
    assert all(t["latency"]["figure"] in ("robust", "median") for t in trials)
    best = json.loads(mnas(stack, "best", search_id, "--top", "2", "-o", "json").stdout)
    assert len(best["best"]) == 2
    assert best["search"]["id"] == search_id
    assert best["pareto"]


def test_watch_of_an_ended_search_prints_json_lines(finished: tuple[Stack, str]) -> None:
    stack, search_id = finished
    result = mnas(stack, "watch", search_id, "-o", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["kind"] == "snapshot"
    assert events[0]["search"]["state"] == "succeeded"


def test_a_table_says_which_latency_it_shows(finished: tuple[Stack, str]) -> None:
    stack, search_id = finished
    for argv in (["trials", search_id], ["best", search_id]):
        out = mnas(stack, *argv).stdout
        assert "latency (ms)*" in out
        assert "* latency: the mean of the fastest tenth of the timed runs" in out


def test_submit_and_cancel_print_the_search(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_text("scripted", seed=3, trials=5))
    with local_stack(tmp_path, InProcessWorkers(PacedTraining(free=False))) as stack:
        submitted = mnas(stack, "submit", str(spec), "-o", "json")
        assert submitted.returncode == 0, submitted.stderr
        search = json.loads(submitted.stdout)
        assert search["state"] == "running"
        assert search["name"] == "scripted"
        cancelled = mnas(stack, "cancel", search["id"], "-o", "yaml")
        assert cancelled.returncode == 0, cancelled.stderr
        assert yaml.safe_load(cancelled.stdout)["id"] == search["id"]


def test_a_piped_watch_prints_each_trial_as_it_ends(tmp_path: Path) -> None:
    """A line on where the search stands, then the first trial's line, which arrives
    while the second trial still waits for its trainer."""
    trainer = PacedTraining(free=False)
    with local_stack(tmp_path, InProcessWorkers(trainer)) as stack:
        search = stack.controller.submit(tiny_spec("scripted", seed=3, trials=2))
        env = {**os.environ, "MNAS_TARGET": stack.address}
        watch = subprocess.Popen(
            [MNAS, "watch", search.id], stdout=subprocess.PIPE, text=True, env=env
        )
        assert watch.stdout is not None
        snapshot = read_line(watch.stdout)  # the watch follows the search from here on
        assert snapshot.startswith(f"search {search.id} running: 0/2 done, best -")
        trainer.permits.release()
        first = read_line(watch.stdout)
        assert first.startswith("trial 0 completed: reward ")
        assert "1/2 done" in first
        running = stack.controller.get(search.id)
        assert running.state == common_pb2.SEARCH_STATE_RUNNING  # the line came first
        trainer.permits.release()
        rest, _ = watch.communicate(timeout=WAIT)
        assert watch.returncode == 0
        assert rest.startswith("trial 1 completed: ")
        assert "2/2 done" in rest


def test_trials_per_hour_are_the_searchs_own() -> None:
    """A search that ran 3 trials in 2 hours shows 2 trials/h however late it is watched
    (it showed a million when timed from the watch's start)."""
    from mnas.cli_searches import _rate
    from mnas.results import SearchInfo

    ended = datetime.now(UTC) - timedelta(days=3)
    proto = common_pb2.Search(
        id="s", state=common_pb2.SEARCH_STATE_SUCCEEDED, trials_completed=3, trials_failed=1
    )
    proto.created_at.FromDatetime(ended - timedelta(hours=2))
    proto.finished_at.FromDatetime(ended)
    assert _rate(SearchInfo.from_proto(proto)) == "2"

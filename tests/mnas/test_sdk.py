"""The Python SDK against a real controller on loopback, its workers in process (the
latency service's core on LiteRT, the reward function, and a scripted training that
returns real PyTorch weights): results as dataclasses,
pages fetched as the iteration reaches them, ``wait``'s timeout, the DataFrame, and the
models built from a search's architectures and kept weights."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mnas
from mnas.client import Client, ControllerUnavailable, Search, SearchNotFound
from mnas.cost import count
from mnas.layers import IMAGE_CHANNELS
from mnas.local import free_port
from mnas.results import SearchEvent, SearchInfo, SearchState, Trial, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2
from services.latency.service import LatencyService
from tests.common.blocked_oracle import BlockedOracle
from tests.common.local_workers import InProcessWorkers, instant_training
from tests.controller.stack import local_stack
from tests.mnas.weights_training import WeightsTraining

TRIALS = 6
KEPT = 2
SPEC = f"""
name: sdk
seed: 4
strategy: random
duplicates: DUPLICATE_POLICY_RETRAIN
space:
  resolution: 28
  width: 0.5
  stages: [{{expansion: 1, filters: 16, layers: 1, stride: 2}},
           {{expansion: 6, filters: 24, layers: 1, stride: 2}}]
  choices: {{ops: [dconv, mbconv3, mbconv6], kernels: [3, 5], se_ratios: [0, 0.25],
            skips: [identity], filter_ratios: [0.75, 1], layer_deltas: [0]}}
objective: {{kind: soft, target_latency_seconds: 0.001}}
budget: {{max_trials: {TRIALS}, parallel_trials: 1, keep_weights: {KEPT}}}
latency: {{warmup_runs: 1, runs: 3}}
reference: none
"""


@dataclass(frozen=True)
class Finished:
    address: str
    trainer: WeightsTraining
    search_id: str


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """One search run to its end, shared by the tests that only read it."""
    trainer = WeightsTraining()
    with local_stack(tmp_path_factory.mktemp("sdk"), InProcessWorkers(trainer)) as stack:
        with Client(stack.address) as client:
            search = client.submit(parse_spec(SPEC))
            search.wait(timeout=120)
        yield Finished(stack.address, trainer, search.id)


@pytest.fixture
def search(finished: Finished) -> Iterator[Search]:
    with Client(finished.address) as client:
        yield client.search(finished.search_id)


def test_results_are_dataclasses_with_named_fields(search: Search) -> None:
    final = search.wait(timeout=60)  # finished already: returns at once
    assert isinstance(final, SearchInfo)
    assert final.state is SearchState.SUCCEEDED, final.error
    assert search.state is SearchState.SUCCEEDED and search.done
    assert (final.name, final.max_trials, final.trials_completed) == ("sdk", TRIALS, TRIALS)
    assert final.build == mnas.BuildParams(num_classes=10, resolution=28, width=0.5)
    trials = list(search.trials())
    assert [t.number for t in trials] == list(range(TRIALS))
    for trial in trials:
        assert isinstance(trial, Trial) and isinstance(trial.proto, common_pb2.Trial)
        assert trial.state is TrialState.COMPLETED
        assert trial.accuracy == pytest.approx(trial.proto.training.accuracy)
        assert trial.latency is not None and trial.latency.device_class == "host-cpu"
        assert trial.latency_seconds is not None and trial.latency_seconds > 0
        assert trial.architecture == trial.proto.architecture.canonical
        assert trial.blocks in trial.architecture
        assert trial.search_id == search.id
    assert search.trial(3) == trials[3]
    assert search.trial(TRIALS) is None
    # best: by reward; the controller kept the weights of exactly those.
    best = search.best(KEPT)
    by_reward = sorted(trials, key=lambda t: (-(t.reward or 0.0), t.number))
    assert best == by_reward[:KEPT]
    assert {t.number for t in trials if t.has_weights} == {t.number for t in best}
    assert final.best_trial == best[0].number
    assert final.best_reward == pytest.approx(best[0].reward)
    # pareto: fastest first, and no trial is both faster and more accurate than one on it.
    front = search.pareto()
    assert front and [t.latency_seconds for t in front] == sorted(
        t.latency_seconds or 0.0 for t in front
    )
    assert not any(dominates(t, kept) for t in trials for kept in front)
    with Client(search._client.target) as client:
        (listed,) = [s for s in client.searches() if s.id == search.id]
    assert listed == final


def dominates(a: Trial, b: Trial) -> bool:
    """At least as accurate and as fast, and better on one count."""
    accuracy = (a.accuracy or 0.0, b.accuracy or 0.0)
    latency = (a.latency_seconds or 0.0, b.latency_seconds or 0.0)
    no_worse = accuracy[0] >= accuracy[1] and latency[0] <= latency[1]
    return no_worse and (accuracy[0] > accuracy[1] or latency[0] < latency[1])


def test_watch_yields_events_with_the_search_and_trial(search: Search) -> None:
    (snapshot,) = list(search.watch(timeout=60))  # a finished search: its snapshot only
    assert isinstance(snapshot, SearchEvent)
    assert snapshot.kind is mnas.EventKind.SNAPSHOT
    assert snapshot.search.state is SearchState.SUCCEEDED and snapshot.trial is None


def test_trials_are_fetched_a_page_at_a_time(finished: Finished) -> None:
    """The first page is all there is until the iteration goes past it: with the channel
    closed after two trials of a page of two, the third cannot be fetched."""
    client = Client(finished.address)
    pages = client.search(finished.search_id).trials(page_size=2)
    assert [next(pages).number, next(pages).number] == [0, 1]
    client.close()
    with pytest.raises(ValueError, match=r"[Cc]losed"):
        next(pages)


def test_to_dataframe_without_pandas_says_how_to_install_it(
    search: Search, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        search.to_dataframe()


def test_to_dataframe_has_a_row_per_trial(search: Search) -> None:
    pytest.importorskip("pandas")
    frame = search.to_dataframe()
    assert list(frame.index) == list(range(TRIALS))
    assert list(frame.columns) == [c for c in Trial.columns() if c != "number"]
    assert set(frame["state"]) == {"completed"}
    best = search.best(1)[0]
    assert frame.loc[best.number, "reward"] == pytest.approx(best.reward)
    assert frame.loc[best.number, "latency_seconds"] == pytest.approx(best.latency_seconds)


def test_load_model_puts_the_kept_weights_into_the_trainers_module(
    search: Search, finished: Finished
) -> None:
    best = search.best(1)[0]
    sent = torch.load(io.BytesIO(finished.trainer.sent[best.architecture]), weights_only=True)
    bare = Search(search._client, search.id, common_pb2.Search(id=search.id))  # no spec yet
    for model in (
        search.load_model(best.number),
        mnas.load_model(search, best),
        mnas.load_model(bare, best.number),
    ):
        assert not model.training  # ready for inference
        loaded = model.state_dict()
        assert loaded.keys() == sent.keys()
        assert all(torch.equal(loaded[name], sent[name]) for name in sent)
        with torch.no_grad():
            logits = model(torch.zeros(2, IMAGE_CHANNELS, 28, 28))
        assert logits.shape == (2, 10)
    unkept = next(t for t in search.trials() if not t.has_weights)
    with pytest.raises(SearchNotFound, match="no weights kept"):
        search.load_model(unkept)
    with pytest.raises(SearchNotFound, match="no trial 99"):
        search.load_model(99)


def test_build_model_takes_the_searchs_parameters(search: Search) -> None:
    trial = search.best(1)[0]
    arch = trial.arch()
    params = count(arch, width=0.5, resolution=28, num_classes=10).params
    for model in (
        mnas.build_model(trial.architecture, search=search),
        mnas.build_model(trial, search=search.info),
        mnas.build_model(arch, num_classes=10, resolution=28, width=0.5),
    ):
        assert sum(p.numel() for p in model.parameters()) == params
    fewer = mnas.build_model(trial.blocks, search=search, num_classes=5)  # an override wins
    with torch.no_grad():
        assert fewer.eval()(torch.zeros(1, IMAGE_CHANNELS, 28, 28)).shape == (1, 5)


def test_build_model_knows_the_references_and_refuses_bad_text() -> None:
    a1 = mnas.build_model("mnasnet-a1")  # 1000 classes, 224x224, width 1.0
    assert sum(p.numel() for p in a1.parameters()) == 3_887_038  # the published 3.9M
    with pytest.raises(ValueError, match="r1_k3"):
        mnas.build_model("r1_k3")


def test_build_model_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'mnas\[trainer\]'"):
        mnas.build_model("mnasnet-a1")


def test_import_mnas_needs_neither_grpc_nor_torch() -> None:
    code = (
        "import sys, mnas\n"
        "assert 'grpc' not in sys.modules and 'torch' not in sys.modules\n"
        "assert all(callable(getattr(mnas, name)) for name in mnas.__all__)\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n    mnas.nothing\nexcept AttributeError as err:\n    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'mnas' has no attribute 'nothing'"


# --- waiting -----------------------------------------------------------------------------

RUNNING_SPEC = """
space:
  resolution: 28
  stages: [{expansion: 1, filters: 16, layers: 1, stride: 1}]
  choices: {ops: [dconv], kernels: [3], se_ratios: [0], skips: [identity],
            filter_ratios: [1], layer_deltas: [0]}
objective: {kind: soft, target_latency_seconds: 0.001}
budget: {max_trials: 1}
latency: {warmup_runs: 1, runs: 2}
reference: none
"""


@pytest.fixture
def blocked_latency() -> Iterator[LatencyService]:
    """A latency service's core whose measurements wait until the test ends."""
    oracle = BlockedOracle(timeout=120)
    yield LatencyService([oracle])
    oracle.release.set()


def test_wait_raises_timeout_error_when_the_search_runs_on(
    tmp_path: Path, blocked_latency: LatencyService
) -> None:
    workers = InProcessWorkers(instant_training, latency=blocked_latency)
    with (
        local_stack(tmp_path, workers) as stack,
        Client(stack.address) as client,
    ):
        search = client.submit(parse_spec(RUNNING_SPEC))  # its measurement never ends
        with pytest.raises(TimeoutError, match=f"search {search.id} has not finished") as err:
            search.wait(timeout=1)
        assert "running" in str(err.value)
        assert not isinstance(err.value, ControllerUnavailable)
        events = search.watch(timeout=1)
        assert next(events).kind is mnas.EventKind.SNAPSHOT
        with pytest.raises(TimeoutError):
            next(events)
        assert search.refresh().state is SearchState.RUNNING  # waiting changed nothing
        search.cancel()


def test_wait_on_an_unreachable_controller_raises_controller_unavailable() -> None:
    with Client(f"127.0.0.1:{free_port()}") as client:
        search = Search(client, "gone", common_pb2.Search(id="gone"))
        with pytest.raises(ControllerUnavailable, match="unavailable"):
            search.wait(timeout=2)

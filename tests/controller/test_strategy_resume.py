"""Every strategy that learns inline resumes exactly after its controller dies by SIGKILL.

A real controller process on a real SQLite store, with the real reward service and, in
this process on loopback, a trainer and a latency service that answer at once; the trainer
holds every training until the test lets go the one of the lowest-numbered unfinished
trial, so the trials end one at a time in number order and each next trial is proposed
before the next ends. Part way the controller is killed with SIGKILL and started again on
the same store. The search's trials must be the ones an uninterrupted strategy proposes
when told the same outcomes in the same order. (PPO learns in the background, so its
proposals depend on timing; ``tests/e2e/test_resume.py`` kills and resumes it.)
Real worker servers, since a controller in a process of its own reaches them only by gRPC.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from benchmarks.instant_workers import InstantLatency, InstantTrainer
from mnas.client import Client
from mnas.latency import reported_seconds
from mnas.local import Process, start_service, wait_serving
from mnas.results import SearchState, TrialState
from mnas.specfile import parse_spec
from mnas.v1 import latency_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.common.server import RunningServer, build_server
from services.controller.runner import _unpack
from services.controller.spec import resolve, stored_dataset
from services.controller.store import Store
from services.controller.strategies import STRATEGIES, make_strategy
from services.controller.strategy import Outcome, Strategy
from services.reward.server import make_server as make_reward_server

# Strategies whose proposals follow from the seed and the outcomes alone; those that can
# look for a front again under a pareto objective (``name+front``).
INLINE = sorted(
    name
    for name, cls in STRATEGIES.items()
    if cls.learn_in_background is Strategy.learn_in_background
)
FRONT = "+front"
CASES = INLINE + [name + FRONT for name in INLINE if STRATEGIES[name].searches_front]
BUDGET = 16
PARALLEL = 2
KILL_AFTER = 11  # trials finished before the kill: past TPE's 10 uniform startup trials
TIMEOUT = 120.0
SOFT = "{kind: soft, target_latency_seconds: 0.001}"

SPEC = """
name: resume
seed: 5
strategy: {strategy}
evolution: {{population: 4, sample_size: 2}}
duplicates: DUPLICATE_POLICY_RETRAIN
space: {{resolution: 28, width: 0.5}}
objective: {objective}
budget: {{max_trials: {budget}, parallel_trials: {parallel}}}
reference: none
"""


@dataclass
class _Held:
    canonical: str
    context: grpc.ServicerContext
    go: threading.Event = field(default_factory=threading.Event)


class GatedTrainer(InstantTrainer):
    """Answers a training only when :meth:`release` lets it go."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: list[_Held] = []

    def Train(
        self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext
    ) -> Iterator[trainer_pb2.TrainResponse]:
        held = _Held(request.architecture.canonical, context)
        context.add_callback(held.go.set)  # the controller went away
        with self._changed:
            self._held.append(held)
            self._changed.notify_all()
        held.go.wait(TIMEOUT)
        with self._changed:
            if held in self._held:
                self._held.remove(held)
            self._changed.notify_all()
        if context.is_active():
            yield from super().Train(request, context)

    def wait_held(self, count: int) -> None:
        """Until ``count`` trainings of a live controller are held."""
        with self._changed:
            held = self._changed.wait_for(
                lambda: sum(h.context.is_active() for h in self._held) >= count, TIMEOUT
            )
        assert held, f"fewer than {count} trainings arrived"

    def wait_dropped(self) -> None:
        """Until no held training has a live caller (the killed controller's calls end)."""
        with self._changed:
            dropped = self._changed.wait_for(
                lambda: not any(h.context.is_active() for h in self._held), TIMEOUT
            )
        assert dropped, "the killed controller's trainings are still live"

    def release(self, canonical: str) -> None:
        """Let the oldest held training of ``canonical`` finish, once it has arrived (the
        controller's work gate may let a later trial reach its trainer first)."""

        def waiting() -> list[_Held]:
            return [h for h in self._held if h.canonical == canonical and h.context.is_active()]

        with self._changed:
            arrived = self._changed.wait_for(lambda: bool(waiting()), TIMEOUT)
            assert arrived, f"no training of {canonical} arrived"
            held = waiting()[0]
            self._held.remove(held)
        held.go.set()


@contextlib.contextmanager
def workers(trainer: GatedTrainer) -> Iterator[dict[str, str]]:
    servers: list[RunningServer] = [
        build_server(
            service_names=["mnas.v1.Trainer"],
            add_servicers=lambda s: trainer_pb2_grpc.add_TrainerServicer_to_server(trainer, s),
            registry=CollectorRegistry(),
        ),
        build_server(
            service_names=["mnas.v1.Latency"],
            add_servicers=lambda s: latency_pb2_grpc.add_LatencyServicer_to_server(
                InstantLatency(), s
            ),
            registry=CollectorRegistry(),
        ),
        make_reward_server(registry=CollectorRegistry()),
    ]
    try:
        yield {
            "trainer": servers[0].address,
            "latency": servers[1].address,
            "reward": servers[2].address,
        }
    finally:
        for server in servers:
            server.stop(0)


def start_controller(tmp_path: Path, addresses: dict[str, str], port: int | None) -> Process:
    args = ["--store", str(tmp_path / "mnas.db"), "--trainer", addresses["trainer"]]
    args += ["--latency", addresses["latency"], "--reward", addresses["reward"]]
    process = start_service("controller", log_dir=tmp_path, args=args, port=port)
    try:
        wait_serving(process, "mnas.v1.Controller", TIMEOUT)
    except BaseException:
        process.kill()
        raise
    return process


def replay(strategy: Strategy, trials: list[Outcome]) -> tuple[list[tuple[int, ...]], bytes | None]:
    """The proposals of ``strategy`` with ``PARALLEL`` trials in flight, the trials ending
    in number order with the given decisions and rewards; and its state once it has
    observed ``KILL_AFTER`` of them (before it proposes again), None if it has not
    updated itself by then (the controller checkpoints only after an update)."""
    proposals = [strategy.propose().decisions for _ in range(PARALLEL)]
    at_kill = None
    updated = False
    for number, outcome in enumerate(trials):
        updated = strategy.observe(outcome) or updated
        if number + 1 == KILL_AFTER and updated:
            at_kill = strategy.state()
        if len(proposals) < len(trials):
            proposals.append(strategy.propose().decisions)
    return proposals, at_kill


def load_checkpoint(tmp_path: Path, search_id: str) -> bytes | None:
    store = Store.open(str(tmp_path / "mnas.db"))
    try:
        checkpoint = store.load_strategy_state(search_id)
    finally:
        store.close()
    return None if checkpoint is None else _unpack(checkpoint)[1]


@pytest.mark.parametrize("case", CASES)
def test_a_search_resumes_exactly_after_sigkill(tmp_path: Path, case: str) -> None:
    trainer = GatedTrainer()
    name = case.removesuffix(FRONT)
    objective = "{kind: pareto}" if case.endswith(FRONT) else SOFT
    text = SPEC.format(strategy=name, budget=BUDGET, parallel=PARALLEL, objective=objective)
    spec = parse_spec(text)
    with workers(trainer) as addresses:
        controller = start_controller(tmp_path, addresses, None)
        try:
            with Client(controller.address) as client:
                search_id = client.submit(spec).id
            checkpoint: bytes | None = None
            released = -1
            for done in range(BUDGET):
                if done == KILL_AFTER:
                    trainer.wait_held(PARALLEL)  # the next trial is proposed: then the kill
                    controller.kill()  # SIGKILL
                    trainer.wait_dropped()
                    checkpoint = load_checkpoint(tmp_path, search_id)
                    controller = start_controller(tmp_path, addresses, controller.port)
                trainer.wait_held(min(PARALLEL, BUDGET - done))
                # The lowest unfinished trial not let go already: the one let go last may
                # not be recorded yet when no next trial waits on that record (the last).
                with Client(controller.address) as client:
                    unfinished = [
                        t
                        for t in client.search(search_id).trials()
                        if t.state not in (TrialState.COMPLETED, TrialState.FAILED)
                        and t.number > released
                    ]
                trial = min(unfinished, key=lambda t: t.number)
                trainer.release(trial.architecture)
                released = trial.number
            with Client(controller.address) as client:
                search = client.search(search_id)
                final = search.wait(timeout=TIMEOUT)
                trials = sorted(search.trials(), key=lambda t: t.number)
        finally:
            controller.terminate()

    assert final.state is SearchState.SUCCEEDED, final.error
    assert [t.state for t in trials] == [TrialState.COMPLETED] * BUDGET
    store = Store.open(str(tmp_path / "mnas.db"))
    try:
        stored = store.get_search(search_id)
    finally:
        store.close()
    assert stored is not None
    resolved = resolve(
        stored.spec,
        dataset=stored_dataset(stored.spec),
        device_classes={"host-cpu"},
        strategies=STRATEGIES,
    )

    def new() -> Strategy:
        return make_strategy(name, resolved.space, spec.seed, resolved.strategy_config)

    assert resolved.strategy_config.front is case.endswith(FRONT)

    outcomes = [
        Outcome(
            t.number,
            tuple(t.proto.decisions),
            t.reward,
            accuracy=t.accuracy,
            latency_seconds=reported_seconds(t.proto.latency),
        )
        for t in trials
    ]
    assert all(o.reward is not None and o.accuracy is not None for o in outcomes)
    expected, at_kill = replay(new(), outcomes)
    assert [o.decisions for o in outcomes] == expected
    if at_kill is None:  # never updated, never checkpointed: a restart replays it all
        assert checkpoint is None
    else:  # the last checkpoint before the kill holds the last outcome before it
        assert checkpoint is not None
        restored = new()
        restored.restore(checkpoint)
        assert restored.state() == at_kill

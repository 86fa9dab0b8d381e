"""A controller killed with SIGKILL mid-search and restarted on the same store resumes.

Real processes (controller, two trainers, latency, reward), a real SQLite store, a real
PPO policy that updates every two completed trials.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from mnas.client import Client
from mnas.local import LocalStack
from mnas.results import SearchState, Trial, TrialState
from mnas.specfile import parse_spec
from services.controller.runner import _unpack
from services.controller.spec import resolve, stored_dataset
from services.controller.store import Store
from services.controller.strategies import STRATEGIES, make_strategy

pytestmark = pytest.mark.slow

SPEC = """
name: resume
seed: 11
strategy: ppo
ppo: {batch_size: 2}
duplicates: DUPLICATE_POLICY_RETRAIN
space: {resolution: 28, width: 0.5}
objective: {kind: soft, target_latency_seconds: 0.0005}
budget: {max_trials: 8, parallel_trials: 2}
training: {train_examples: 1500, validation_examples: 300, batch_size: 50}
latency: {warmup_runs: 1, runs: 3}
reference: none
"""


def completed_jobs(stack: LocalStack) -> float:
    """Trainings the trainers completed, from their /metrics."""
    total = 0.0
    for process in stack.processes:
        if process.kind != "trainer":
            continue
        url = f"http://127.0.0.1:{process.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        match = re.search(r'^mnas_trainer_jobs_total\{outcome="completed"\} (\S+)$', text, re.M)
        total += float(match.group(1)) if match else 0.0
    return total


def test_sigkill_and_restart_resumes_the_search(tmp_path: Path) -> None:
    store_path = tmp_path / "mnas.db"
    spec = parse_spec(SPEC)
    with LocalStack(workdir=tmp_path, store=str(store_path), trainers=2) as stack:
        with Client(stack.controller) as client:
            search = client.submit(spec)
            before: list[Trial] = []
            for event in search.watch(timeout=600):
                info = event.search
                if info.strategy_status.updates >= 1 and info.trials_running > 0:
                    before = search.completed()
                    stack.process("controller").kill()
                    break
            assert before, "the search ended before the controller could be killed"

        # What the restarted controller will restore: the last checkpoint in the store.
        store = Store.open(str(store_path))
        checkpoint = store.load_strategy_state(search.id)
        stored_search = store.get_search(search.id)
        store.close()
        assert checkpoint is not None and stored_search is not None
        resolved = resolve(
            stored_search.spec,
            dataset=stored_dataset(stored_search.spec),
            device_classes={"host-cpu"},
            strategies=STRATEGIES,
        )
        restored = make_strategy("ppo", resolved.space, spec.seed, resolved.strategy_config)
        _, state = _unpack(checkpoint)
        restored.restore(state)
        reference = resolved.space.reference_decisions()
        expected = restored.log_prob(reference)
        assert expected is not None

        stack.restart("controller")
        with Client(stack.controller) as client:
            resumed = client.search(search.id)
            status = resumed.refresh().strategy_status
            if status.updates == restored.status().updates:
                # The restarted controller's policy is the checkpointed one.
                assert status.reference_log_prob == pytest.approx(expected, abs=1e-6)
            final = resumed.wait(timeout=600)
            assert final.state is SearchState.SUCCEEDED, final.error
            trials = list(resumed.trials())
        budget = spec.budget.max_trials
        completed = [t for t in trials if t.state is TrialState.COMPLETED]
        assert len(completed) == budget
        assert len({t.number for t in completed}) == budget
        # Trials completed before the kill were not run again.
        after = {t.number: t for t in completed}
        for trial in before:
            assert after[trial.number].finished_at == trial.finished_at
            assert after[trial.number].proto.training == trial.proto.training
        # Trainings cut off by the kill were cancelled on the trainers and run again; one
        # that happened to finish as the controller died may have completed twice.
        assert budget <= completed_jobs(stack) <= budget + spec.budget.parallel_trials
        assert final.strategy_status.updates >= budget // 2 - 1

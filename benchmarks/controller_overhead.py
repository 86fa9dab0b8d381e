"""The controller's own cost per trial: sample, dispatch, record, update.

The controller runs as in production (real gRPC servers on loopback, a SQLite store, the
real reward service) against a trainer and a latency service that answer at once, all
three in a second process as they would be on other machines, so the
wall time of a search divided by its trials is the controller's and gRPC's share. Run at
1 and at 64 trials in flight; the baseline in the same run is the random strategy next to
PPO (whose sampling and updates are the extra work). The search is submitted over gRPC and
awaited in the controller's process (``Controller.wait``): a watching client there would
decode every event in the very process being measured, which a real client never does.

    python -m benchmarks.controller_overhead [--trials 512] [--repeats 3]

Last line: ``{"ms_per_trial": {"1": ..., "64": ...}, ...}`` (PPO; goal <= 5 ms), and
``cpu_ms_per_trial``: the CPU time each process spent per trial (the controller, that is
this process, which also submits and awaits the searches; the backends; the PPO learner),
steadier than wall time on a shared machine and where an excess shows which process it
comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from benchmarks.instant_workers import instant_workers_process
from mnas.client import Client
from mnas.specfile import parse_spec
from services.controller.clients import Backends
from services.controller.core import Controller
from services.controller.learner import shared_learner, warm_up
from services.controller.metrics import ControllerMetrics
from services.controller.server import make_server
from services.controller.store import Store

WARM_UP_TRIALS = 64


SPEC = """
strategy: %(strategy)s
duplicates: DUPLICATE_POLICY_RETRAIN
objective: {kind: soft, target_latency_seconds: 0.0015}
budget: {max_trials: %(trials)d, parallel_trials: %(parallel)d}
"""


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds of process ``pid`` so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


@dataclass(frozen=True)
class Measured:
    """One timed search: wall and per-process CPU milliseconds per trial."""

    wall: float
    cpu: dict[str, float]


@contextlib.contextmanager
def backends_process() -> Iterator[tuple[Backends, int]]:
    """The backends in a process of their own, as in production: their gRPC work does not
    share the controller's interpreter."""
    with instant_workers_process() as (addresses, pid):
        yield (
            Backends(
                trainers=[addresses["trainer"]],
                latency=[addresses["latency"]],
                reward=addresses["reward"],
            ),
            pid,
        )


def run(strategy: str, trials: int, parallel: int, workdir: Path, repeats: int) -> Measured:
    """Milliseconds of controller time per trial: the median over ``repeats`` searches on
    one controller, after an untimed one that pays the costs of first use (connections,
    compiled statements, the learner's modules); each CPU figure its own median."""
    store = Store.open(str(workdir / f"{strategy}-{parallel}.db"))
    with backends_process() as (backends, backends_pid):
        controller = Controller(store, backends, ControllerMetrics(CollectorRegistry()))
        server = make_server(controller, registry=CollectorRegistry())
        try:
            with Client(server.address) as client:

                def cpu() -> dict[str, float]:
                    return {
                        "controller": time.process_time(),
                        "backends": cpu_seconds(backends_pid),
                        "learner": cpu_seconds(shared_learner().pid),
                    }

                def search(count: int) -> Measured:
                    spec = parse_spec(
                        SPEC % {"strategy": strategy, "trials": count, "parallel": parallel}
                    )
                    submitted = client.submit(spec)  # validation and set-up: once per search
                    cpu_before = cpu()
                    started = time.perf_counter()
                    final = controller.wait(submitted.id, timeout=3600)
                    elapsed = time.perf_counter() - started
                    used = {k: v - cpu_before[k] for k, v in cpu().items()}
                    assert final.trials_completed == count, final.error
                    return Measured(
                        wall=elapsed / count * 1e3,
                        cpu={k: v / count * 1e3 for k, v in used.items()},
                    )

                search(WARM_UP_TRIALS)
                timed = [search(trials) for _ in range(repeats)]
                return Measured(
                    wall=statistics.median(m.wall for m in timed),
                    cpu={k: statistics.median(m.cpu[k] for m in timed) for k in timed[0].cpu},
                )
        finally:
            server.stop(0)
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=512, help="trials per search")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per setting")
    args = parser.parse_args()
    # As the controller process does at start-up (services/controller/__main__.py).
    torch.set_num_threads(1)
    warm_up()
    workdir = Path(tempfile.mkdtemp(prefix="mnas-overhead-"))
    results: dict[str, dict[str, float]] = {}
    cpu: dict[str, dict[str, dict[str, float]]] = {}
    for strategy in ("random", "ppo"):
        results[strategy] = {}
        cpu[strategy] = {}
        for parallel in (1, 64):
            measured = run(strategy, args.trials, parallel, workdir, args.repeats)
            results[strategy][str(parallel)] = round(measured.wall, 2)
            cpu[strategy][str(parallel)] = {k: round(v, 2) for k, v in measured.cpu.items()}
            print(
                json.dumps(
                    {
                        "strategy": strategy,
                        "in_flight": parallel,
                        "ms_per_trial": round(measured.wall, 2),
                        "cpu_ms_per_trial": cpu[strategy][str(parallel)],
                    }
                ),
                file=sys.stderr,
            )
    print(
        json.dumps(
            {
                "trials": args.trials,
                "repeats": args.repeats,
                "ms_per_trial": results["ppo"],
                "random_ms_per_trial": results["random"],
                "goal_ms": 5,
                "cpu_ms_per_trial": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Throughput of a whole search on this machine, and where one trial's time goes.

Starts the four services as processes on loopback (SQLite store), runs a spec
(default: examples/quickstart.yaml) and prints JSON, the last line being
``{"trials_per_hour": ..., "split_seconds": {...}, ...}``. ``split_seconds`` is the mean
per completed trial of: train (inside the trainer), export (build + .tflite), measure
(LiteRT runs and the Measure call), reward, and overhead (the rest of the trial's wall
time: scheduling, model building and data loading on the trainer, gRPC). The baseline in
the same run is the serial time, the sum of the trials' wall times.

    python benchmarks/pipeline.py [--spec examples/quickstart.yaml] [--trainers 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mnas.client import Client
from mnas.local import LocalStack
from mnas.results import TrialState
from mnas.specfile import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "quickstart.yaml"))
    parser.add_argument("--trainers", type=int, default=1)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    workdir = Path(tempfile.mkdtemp(prefix="mnas-bench-"))
    started = time.monotonic()
    with LocalStack(
        workdir=workdir, store=str(workdir / "mnas.db"), trainers=args.trainers
    ) as stack:
        startup = time.monotonic() - started
        with Client(stack.controller) as client:
            search = client.submit(spec)
            final = search.wait().proto
            trials = [t.proto for t in search.trials() if t.state is TrialState.COMPLETED]
    if not trials:
        raise SystemExit(f"no trial completed: {final.error}")
    wall = final.finished_at.ToNanoseconds() - final.created_at.ToNanoseconds()
    wall_seconds = wall / 1e9
    split: dict[str, list[float]] = {
        k: [] for k in ("train", "export", "measure", "reward", "overhead")
    }
    trial_walls = []
    for t in trials:
        trial_wall = (t.finished_at.ToNanoseconds() - t.started_at.ToNanoseconds()) / 1e9
        trial_walls.append(trial_wall)
        parts = {
            "train": t.training.seconds,
            "export": t.export_seconds,
            "measure": t.latency_seconds - t.export_seconds,
            "reward": t.reward_seconds,
        }
        parts["overhead"] = trial_wall - sum(parts.values())
        for key, value in parts.items():
            split[key].append(value)
        print(
            json.dumps(
                {
                    "trial": t.number,
                    "wall_seconds": round(trial_wall, 3),
                    **{k: round(v, 4) for k, v in parts.items()},
                }
            ),
            file=sys.stderr,
        )
    result = {
        "spec": Path(args.spec).name,
        "trials": len(trials),
        "trainers": args.trainers,
        "parallel_trials": spec.budget.parallel_trials or 1,
        "services_startup_seconds": round(startup, 2),
        "search_wall_seconds": round(wall_seconds, 2),
        "serial_seconds": round(sum(trial_walls), 2),
        "trials_per_hour": round(len(trials) / (wall_seconds / 3600), 1),
        "split_seconds": {k: round(statistics.fmean(v), 4) for k, v in split.items()},
        "best_reward": round(max(t.reward for t in trials), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

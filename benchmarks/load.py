"""The controller under load: many searches, many watchers, many trials in flight.

A real controller process (``python -m services.controller``, SQLite store) runs
``--searches`` searches at once over workers that answer at once
(:mod:`benchmarks.instant_workers`, in a process of their own), up to 64 trials in
flight, until ``--trials`` trials are done in all; ``--watchers`` clients, in a third
process, follow the searches (``WatchSearch``, spread evenly). Meanwhile this process
times ``GetSearch`` and ``ListTrials`` (a page of 100) calls, one at a time, each on a
random search, and reads the controller's resident memory (VmRSS) as the completed
trials cross 0, 1,000 and every later thousand.

    python -m benchmarks.load [--trials 10000] [--searches 20] [--watchers 200]
                              [--work-slots 2] [--baseline-slots 128]

The same load runs twice, on a new controller each time: with ``--work-slots`` (the
controller's gate on its trial threads, :mod:`services.controller.gate`), then, as the
baseline, with ``--baseline-slots`` (by default more slots than threads: no gate).

Last line: one JSON object with ``get_search_ms`` and ``list_trials_ms`` (p50, p99, max,
calls), ``rss_mb`` by completed trials, ``trials_per_second``, the most trials seen in
flight, and what the watchers received; the baseline's under ``baseline``. Goal: p99 of
GetSearch <= 50 ms; memory that grows only with the data the controller keeps (searches
in memory, not trials: trials live in the store).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.instant_workers import CAPACITY, instant_workers_process
from mnas.client import Client
from mnas.local import start_service, wait_serving
from mnas.rpc import channel
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2, controller_pb2, controller_pb2_grpc
from services.controller.gate import DEFAULT_SLOTS

SPEC = """
name: load-%(index)d
seed: %(index)d
strategy: random
duplicates: DUPLICATE_POLICY_RETRAIN
objective: {kind: soft, target_latency_seconds: 0.0015}
budget: {max_trials: %(trials)d, parallel_trials: %(parallel)d}
reference: none
"""
PAGE = 100
PROBE_PAUSE_SECONDS = 0.02  # between two timed calls: a steady stream, not a flood
RSS_EVERY = 1000
UNGATED = CAPACITY + 64  # more slots than trial threads ever run at once


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1e3

    return {
        "p50": round(at(0.50), 2),
        "p99": round(at(0.99), 2),
        "max": round(ordered[-1] * 1e3, 2),
        "calls": len(ordered),
    }


def watch_all(target: str, search_ids: list[str], watchers: int) -> None:
    """(The watchers' process.) ``watchers`` threads, each following one search to its
    end; prints the events and streams received as one JSON line."""
    events = [0] * watchers
    finished = [False] * watchers
    ch = channel(target)
    stub = controller_pb2_grpc.ControllerStub(ch)

    def follow(index: int) -> None:
        request = controller_pb2.WatchSearchRequest(search_id=search_ids[index % len(search_ids)])
        for event in stub.WatchSearch(request, timeout=3600):
            events[index] += 1
            if event.kind == controller_pb2.EVENT_KIND_SEARCH_FINISHED:
                finished[index] = True

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(watchers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"events": sum(events), "streams_finished": sum(finished)}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000, help="trials in all")
    parser.add_argument("--searches", type=int, default=20, help="searches at once")
    parser.add_argument("--watchers", type=int, default=200, help="WatchSearch clients")
    parser.add_argument(
        "--work-slots",
        type=int,
        default=DEFAULT_SLOTS,
        help=f"the controller's --work-slots (default {DEFAULT_SLOTS}, the controller's own)",
    )
    parser.add_argument(
        "--baseline-slots",
        type=int,
        default=UNGATED,
        help=f"--work-slots of the baseline run, on the same load (default {UNGATED}: as "
        "many as there are trials in flight, i.e. no gate); 0 skips the baseline",
    )
    parser.add_argument("--watch", nargs="+", help=argparse.SUPPRESS)  # TARGET IDS...
    args = parser.parse_args()
    if args.watch:
        watch_all(args.watch[0], args.watch[1:], args.watchers)
        return 0
    result = one_run(args, args.work_slots)
    if args.baseline_slots:
        result["baseline"] = one_run(args, args.baseline_slots)
    print(json.dumps(result))
    return 0


def one_run(args: argparse.Namespace, work_slots: int) -> dict[str, Any]:
    """The load against a new controller with ``work_slots``; its figures."""
    per_search = args.trials // args.searches
    total = per_search * args.searches
    # Every search asks for its share of the workers' slots, a few more than there are,
    # so the controller always has CAPACITY trials in flight while work remains.
    parallel = max(1, -(-CAPACITY // args.searches) + 1)
    workdir = Path(tempfile.mkdtemp(prefix="mnas-load-"))
    with instant_workers_process() as (workers, _):
        controller = start_service(
            "controller",
            log_dir=workdir,
            args=[
                "--store",
                str(workdir / "mnas.db"),
                "--trainer",
                workers["trainer"],
                "--latency",
                workers["latency"],
                "--reward",
                workers["reward"],
                "--work-slots",
                str(work_slots),
                "--log-level",
                "warning",
            ],
        )
        try:
            wait_serving(controller, "mnas.v1.Controller", timeout=120)
            figures = run(
                controller.address, controller.popen.pid, args, per_search, total, parallel
            )
        finally:
            controller.terminate()
    return {"work_slots": work_slots, **figures}


def run(
    target: str, pid: int, args: argparse.Namespace, per_search: int, total: int, parallel: int
) -> dict[str, Any]:
    rss = {"0": round(rss_mb(pid), 1)}
    with Client(target) as client:
        ids = [
            client.submit(
                parse_spec(SPEC % {"index": i, "trials": per_search, "parallel": parallel})
            ).id
            for i in range(args.searches)
        ]
        watchers = subprocess.Popen(  # the watchers, in a process of their own
            [
                sys.executable,
                *("-m", "benchmarks.load", "--watchers", str(args.watchers)),
                *("--watch", target, *ids),
            ],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.PIPE,
            text=True,
        )
        started = time.perf_counter()
        timings: dict[str, list[float]] = {"get_search": [], "list_trials": []}
        most_in_flight = 0
        next_rss = RSS_EVERY
        pick = random.Random(0)
        with channel(target) as ch:
            stub = controller_pb2_grpc.ControllerStub(ch)
            while True:
                search_id = pick.choice(ids)
                t0 = time.perf_counter()
                stub.GetSearch(controller_pb2.GetSearchRequest(search_id=search_id), timeout=30)
                t1 = time.perf_counter()
                stub.ListTrials(
                    controller_pb2.ListTrialsRequest(search_id=search_id, page_size=PAGE),
                    timeout=30,
                )
                t2 = time.perf_counter()
                timings["get_search"].append(t1 - t0)
                timings["list_trials"].append(t2 - t1)
                searches = stub.ListSearches(controller_pb2.ListSearchesRequest(), timeout=30)
                mine = [s for s in searches.searches if s.id in ids]
                done = sum(s.trials_completed + s.trials_failed for s in mine)
                most_in_flight = max(most_in_flight, sum(s.trials_running for s in mine))
                while done >= next_rss:
                    rss[str(next_rss)] = round(rss_mb(pid), 1)
                    next_rss += RSS_EVERY
                if all(s.state != common_pb2.SEARCH_STATE_RUNNING for s in mine):
                    break
                time.sleep(PROBE_PAUSE_SECONDS)  # pacing the probe, not synchronisation
        elapsed = time.perf_counter() - started
        rss["end"] = round(rss_mb(pid), 1)
        out, _ = watchers.communicate(timeout=600)
        states = {
            common_pb2.SearchState.Name(s.proto.state) for s in client.searches() if s.id in ids
        }
    watched = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {
        "searches": args.searches,
        "trials": total,
        "watchers": args.watchers,
        "search_states": sorted(states),
        "seconds": round(elapsed, 1),
        "trials_per_second": round(total / elapsed, 1),
        "most_trials_in_flight": most_in_flight,
        "get_search_ms": percentiles(timings["get_search"]),
        "list_trials_ms": percentiles(timings["list_trials"]),
        "goal_get_search_p99_ms": 50,
        "rss_mb": rss,
        "rss_mb_per_1000_trials_after_1000": round(
            (rss["end"] - rss.get("1000", rss["end"])) / max(1, (total - 1000) / 1000), 2
        ),
        "watched": watched,
        "mean_get_search_ms": round(statistics.fmean(timings["get_search"]) * 1e3, 2),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    sys.exit(main())

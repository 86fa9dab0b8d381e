"""A stand-in for TFLite's ``benchmark_model`` on a fake phone: same flags, same output.

Runs the real LiteRT interpreter on ``--graph`` and prints what the tool prints (see
``services.latency.phones.benchmark_output``); on a model it cannot load it prints the
tool's errors and exits 1. One difference: ``--warmup_min_secs`` defaults to 0 here
(the real tool warms up for at least 0.5 s), so that tests stay fast.
"""

from __future__ import annotations

import argparse
import math
import sys
import time


class _Stat:
    def __init__(self) -> None:
        self.values: list[int] = []

    def line(self) -> str:
        values = self.values
        if not values:
            return "count=0"
        if min(values) == max(values):
            return f"count={len(values)} curr={values[-1]}" + (
                "(all same)" if len(values) > 1 else ""
            )
        avg = sum(values) / len(values)
        std = int(math.sqrt(sum(v * v for v in values) / len(values) - avg * avg))
        return (
            f"count={len(values)} first={values[0]} curr={values[-1]} min={min(values)} "
            f"max={max(values)} avg={avg:g} std={std}"
        )

    @property
    def avg(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan


def _run(invoke, runs: int, min_secs: float) -> _Stat:
    stat = _Stat()
    started = time.perf_counter()
    while len(stat.values) < runs or time.perf_counter() - started < min_secs:
        begin = time.perf_counter()
        invoke()
        stat.values.append(max(1, round((time.perf_counter() - begin) * 1e6)))
    return stat


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graph", required=True)
    parser.add_argument("--num_threads", type=int, default=-1)
    parser.add_argument("--warmup_runs", type=int, default=1)
    parser.add_argument("--num_runs", type=int, default=50)
    parser.add_argument("--min_secs", type=float, default=1.0)
    parser.add_argument("--warmup_min_secs", type=float, default=0.0)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print("INFO: STARTING!", flush=True)
    print(f"INFO: Graph: [{args.graph}]")
    print(f"INFO: Num threads: [{args.num_threads}]")
    from ai_edge_litert.interpreter import Interpreter

    started = time.perf_counter()
    try:
        interpreter = Interpreter(model_path=args.graph, num_threads=max(1, args.num_threads))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        print(f"ERROR: Failed to mmap model {args.graph}: {err}", file=sys.stderr)
        print("ERROR: Benchmarking failed.", file=sys.stderr)
        return 1
    init_us = round((time.perf_counter() - started) * 1e6)
    print(f"INFO: Initialized session in {init_us / 1e3:g}ms.")
    phases = []
    for runs, min_secs in (
        (args.warmup_runs, args.warmup_min_secs),
        (args.num_runs, args.min_secs),
    ):
        print(
            f"INFO: Running benchmark for at least {runs} iterations and at least "
            f"{min_secs:g} seconds but terminate if exceeding 150 seconds."
        )
        phases.append(_run(interpreter.invoke, runs, min_secs))
        print(f"INFO: {phases[-1].line()}\n")
    warmup, inference = phases
    first = warmup.values[0] if warmup.values else 0
    print(
        f"INFO: Inference timings in us: Init: {init_us}, First inference: {first}, "
        f"Warmup (avg): {warmup.avg:g}, Inference (avg): {inference.avg:g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

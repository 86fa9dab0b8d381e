"""A training step's time with one core kept busy by another process, against a quiet one.

Run as ``python benchmarks/busy_trainer.py [--archs 3] [--steps 6] [--repeats 2]``.
Times training steps (forward, loss, backward and an SGD step on a batch of 64 28x28
images, 10 classes) of ``--archs`` architectures sampled from the small-image space, in a
child process started as the trainer starts its training children (forked from the
trainer's fork server, :func:`services.trainer.isolation.start_fork_server`, with torch's
threads set as :func:`services.trainer.training.train` sets them), under two loads:
quiet, and with one core kept busy by another process spinning in a loop (started before
the child, ended after it). Two thread choices run, interleaved repeat by repeat:

- ``trainer``: what the trainer chooses as a training starts, the usable cores
  (:func:`services.trainer.cores.threads_per_slot`, one slot) capped by the cores idle
  then (:func:`services.trainer.cores.threads_to_use`);
- ``old`` (the baseline): ``os.cpu_count()`` threads whatever the load, as before.

A figure is the mean over the architectures of each one's median step time (milliseconds)
over its timed steps, medianed over the repeats; an architecture whose steps take longer
than ``--max-seconds`` in all is timed on fewer steps (at least two). The last line of
stdout is one JSON object: ``quiet_step_ms``, ``busy_step_ms``, ``busy_slowdown`` (busy
over quiet) and ``threads`` for the trainer's choice, and the same under ``old``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from mnas.arch import Architecture
from mnas.space import SearchSpace, preset
from services.trainer.builder import build_torch
from services.trainer.cores import threads_per_slot, threads_to_use, usable_cores
from services.trainer.isolation import start_fork_server
from services.trainer.training import DEFAULT_MOMENTUM

_logger = logging.getLogger("benchmarks.busy_trainer")

RESOLUTION = 28
CLASSES = 10
WIDTH = 0.5
LEARNING_RATE = 0.05
LOADS = ("quiet", "busy")
POLICIES = ("trainer", "old")
SPIN = "while True:\n    pass\n"


def sample_archs(count: int, seed: int) -> list[Architecture]:
    """``count`` architectures of the small-image space, as a search samples them."""
    space = SearchSpace(
        stages=preset("small-images").stages,
        resolution=RESOLUTION,
        num_classes=CLASSES,
        width=WIDTH,
    )
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(count)]


def time_steps(
    sender: multiprocessing.connection.Connection,
    threads: int,
    archs: list[Architecture],
    batch: int,
    warmup: int,
    steps: int,
    max_seconds: float,
) -> None:
    """In the child: set the threads as ``train`` does, then send each architecture's step
    times in milliseconds."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, RESOLUTION, RESOLUTION, generator=generator)
    y = torch.randint(0, CLASSES, (batch,), generator=generator)
    sender.send([time_arch(arch, x, y, warmup, steps, max_seconds) for arch in archs])
    sender.close()


def time_arch(
    arch: Architecture,
    x: torch.Tensor,
    y: torch.Tensor,
    warmup: int,
    steps: int,
    max_seconds: float,
) -> list[float]:
    """Milliseconds of each timed training step of a fresh ``arch`` on the batch ``x, y``."""
    torch.manual_seed(0)
    model = build_torch(arch, num_classes=CLASSES, resolution=RESOLUTION, width=WIDTH)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=DEFAULT_MOMENTUM)

    def step() -> float:
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return (time.perf_counter() - start) * 1000

    for _ in range(warmup):
        step()
    times: list[float] = []
    began = time.monotonic()
    while len(times) < steps and (len(times) < 2 or time.monotonic() - began < max_seconds):
        times.append(step())
    return times


def measure(threads: int, archs: list[Architecture], args: argparse.Namespace) -> list[float]:
    """Median step time (ms) of each architecture, in a child of the trainer's fork server."""
    context = multiprocessing.get_context("forkserver")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=time_steps,
        args=(sender, threads, archs, args.batch, args.warmup, args.steps, args.max_seconds),
        daemon=True,
    )
    child.start()
    sender.close()
    try:
        results: list[list[float]] = receiver.recv()
    finally:
        child.join(10)
        receiver.close()
    return [statistics.median(times) for times in results]


@contextmanager
def load(kind: str) -> Iterator[None]:
    """Nothing for ``quiet``; for ``busy``, another process spinning on one core."""
    if kind == "quiet":
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def summary(runs: list[list[float]]) -> float:
    """The mean over architectures of each one's median over repeats."""
    per_arch = [statistics.median(run[i] for run in runs) for i in range(len(runs[0]))]
    return statistics.fmean(per_arch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=3, help="architectures sampled")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per architecture")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all conditions")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled archs")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=15.0,
        help="time steps of one architecture for about this long at most",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    archs = sample_archs(args.archs, args.seed)
    start_fork_server()  # as the trainer does: children fork from it
    share = threads_per_slot(1)
    old_threads = os.cpu_count() or 1
    runs: dict[tuple[str, str], list[list[float]]] = {}
    chosen: dict[str, list[int]] = {kind: [] for kind in LOADS}
    started = time.monotonic()
    for repeat in range(args.repeats):
        conditions = [(p, k) for p in POLICIES for k in LOADS]
        if repeat % 2:
            conditions.reverse()  # interleave, so a drift of the machine hits both
        for policy, kind in conditions:
            with load(kind):
                if policy == "trainer":
                    threads = threads_to_use(share)
                    chosen[kind].append(threads)
                else:
                    threads = old_threads
                step_ms = measure(threads, archs, args)
            runs.setdefault((policy, kind), []).append(step_ms)
            _logger.info(
                "repeat %d %s %s: %d thread(s), step ms %s",
                repeat + 1,
                policy,
                kind,
                threads,
                [round(ms, 1) for ms in step_ms],
            )

    def figures(policy: str) -> dict[str, float]:
        quiet = summary(runs[(policy, "quiet")])
        busy = summary(runs[(policy, "busy")])
        return {
            "quiet_step_ms": round(quiet, 1),
            "busy_step_ms": round(busy, 1),
            "busy_slowdown": round(busy / quiet, 3),
        }

    trainer, old = figures("trainer"), figures("old")
    print(
        json.dumps(
            {
                **trainer,
                "threads": share,
                "threads_chosen": chosen,
                "old": {**old, "threads": old_threads},
                "busy_vs_old_busy": round(trainer["busy_step_ms"] / old["busy_step_ms"], 3),
                "quiet_vs_old_quiet": round(trainer["quiet_step_ms"] / old["quiet_step_ms"], 3),
                "runs_step_ms": {
                    f"{p} {k}": [[round(ms, 1) for ms in run] for run in r]
                    for (p, k), r in runs.items()
                },
                "archs": [arch.id for arch in archs],
                "usable_cores": usable_cores(),
                "cpu_count": os.cpu_count(),
                "batch": args.batch,
                "steps": args.steps,
                "repeats": args.repeats,
                "seconds": round(time.monotonic() - started, 1),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()

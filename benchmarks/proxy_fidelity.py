"""Does the proxy task rank architectures the same way twice? Kendall's tau over two seeds.

Run as ``python benchmarks/proxy_fidelity.py [--archs 10] [--steps 128] ...``. Samples
architectures from the default search space (``SearchSpace().sample(random.Random(k))``
for k = 0, 1, ...), trains each with :func:`services.trainer.training.train` on a small
Fashion-MNIST proxy (width 0.5, resolution 28, a few thousand training images) under two
seeds, and compares the two rankings of held-out accuracy with Kendall's tau-b. A seed
sets the weights' initialization, the batch order and the held-out split, so the tau is
the rank agreement a search can expect between two repetitions of the same proxy. The
last line of stdout is one JSON object with ``kendall_tau`` and the accuracies.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence

import torch

from mnas.space import SearchSpace
from services.trainer.training import TrainingConfig, train

_logger = logging.getLogger("benchmarks.proxy_fidelity")


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties adjusted); NaN when one is constant."""
    if len(x) != len(y):
        raise ValueError(f"samples differ in length: {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt(
        (concordant + discordant + tied_x) * (concordant + discordant + tied_y)
    )
    return (concordant - discordant) / denominator if denominator else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=10, help="architectures (at least 8)")
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 1))
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--optimizer", choices=("sgd", "rmsprop"), default="sgd")
    parser.add_argument("--warmup-fraction", type=float, default=0.0)
    parser.add_argument("--train-examples", type=int, default=4096)
    parser.add_argument("--validation-examples", type=int, default=2000)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; more than the idle cores slows torch badly")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.archs < 2:
        raise SystemExit("--archs: need at least 2 architectures to rank")
    torch.set_num_threads(args.threads)
    space = SearchSpace()
    started = time.perf_counter()
    results: list[dict[str, object]] = []
    by_seed: dict[int, list[float]] = {seed: [] for seed in args.seeds}
    for k in range(args.archs):
        arch = space.sample(random.Random(k))
        row: dict[str, object] = {"sample": k, "arch": arch.id}
        for seed in args.seeds:
            config = TrainingConfig(
                steps=args.steps, batch_size=args.batch, learning_rate=args.learning_rate,
                seed=seed, train_examples=args.train_examples,
                validation_examples=args.validation_examples, optimizer=args.optimizer,
                warmup_fraction=args.warmup_fraction,
            )
            outcome = train(arch, config=config, resolution=args.resolution, width=args.width)
            by_seed[seed].append(outcome.accuracy)
            row[f"accuracy_seed{seed}"] = round(outcome.accuracy, 4)
            row[f"seconds_seed{seed}"] = round(outcome.seconds, 1)
        _logger.info("sample %d %s: %s", k, arch.id, row)
        results.append(row)
    first, second = (by_seed[seed] for seed in args.seeds)
    tau = kendall_tau_b(first, second)
    print(json.dumps({
        "kendall_tau": round(tau, 4),
        "archs": args.archs,
        "seeds": list(args.seeds),
        "accuracies": results,
        "mean_accuracy": round(sum(first + second) / (2 * len(first)), 4),
        "mean_abs_seed_difference": round(
            sum(abs(a - b) for a, b in zip(first, second, strict=True)) / len(first), 4),
        "proxy": {
            "dataset": "fashion-mnist", "width": args.width, "resolution": args.resolution,
            "steps": args.steps, "batch": args.batch, "learning_rate": args.learning_rate,
            "optimizer": args.optimizer, "warmup_fraction": args.warmup_fraction,
            "train_examples": args.train_examples,
            "validation_examples": args.validation_examples,
        },
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()

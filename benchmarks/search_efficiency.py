"""How many trials PPO, regularized evolution and random search need on a known landscape.

No training: a fixed synthetic objective over the default 42-decision space (7 blocks)
whose optimum is known exactly.

- Latency: the architecture's multiply-adds (``mnas.cost.count`` at 224x224, 1000 classes)
  times a constant, ``SECONDS_PER_MAC``, that puts MobileNetV2 (301M) at ``T`` = 75 ms.
- Accuracy: ``ACC_MAX * sigmoid((S - center) / scale) * exp(q(x))``. The first factor is
  the quality of the decisions: a score ``S``, a sum of one
  weight per decision, drawn once from a fixed seed. A weight is a random part, scaled by
  an importance ``exp(-rank / IMPORTANCE_DECAY)`` (a few decisions matter much, most
  little, as in real spaces), plus ``CAPACITY`` times how much the choice adds to its
  block's multiply-adds (standardized per decision), so bigger networks tend to be more
  accurate. ``center`` and ``scale`` come from the exact mean and spread of ``S``; with
  ``CENTER = -2.5`` the sigmoid is near saturation at the top, so many networks come within
  1% of the best and random search gets there in a few thousand trials. The second is
  what capacity buys: ``x = ln(latency / T)`` and ``q(x) = ELASTICITY * x - CURVATURE *
  x**2 / 2``, so at ``T`` doubling the latency buys about ``ELASTICITY`` of relative
  accuracy (MnasNet section 3.4 chose w = -0.07 because doubling latency bought about 5%),
  more for small networks and less for big ones, as in the paper's Figure 3 landscapes.
- Reward: ``services.reward.rewards.reward`` with the paper's hard (alpha = 0, beta = -1)
  and soft (alpha = beta = -0.07) objectives at ``T``.

Under the soft objective ``log reward = log sigmoid(...) - CURVATURE * x**2 / 2``: a
network at ``T`` is worth most and deviations either way cost alike, so a search keeps
exploring both sides of ``T``. Under the hard one the reward grows up to ``T`` and falls
as ``(latency / T)**-1`` above it, so a search concentrates just below ``T``.

The optimum is exact: for a fixed latency the reward grows with ``S``, so it lies on the
Pareto front of (fewest multiply-adds, greatest ``S``). Multiply-adds split exactly into
stem + one term per block + head, where block ``b``'s term depends only on its own six
choices and the filters of the block before it (the head's on the last block's filters); a
dynamic program over the blocks keeps, for each filter choice, the exact front of the
partial networks, and the best point of the final fronts is the optimum. The split is
checked against ``count`` on random networks and on the optima.

Each search keeps ``--in-flight`` trials outstanding: whenever a randomly chosen one
finishes, it is observed and the next is proposed, so outcomes arrive out of order while
other proposals wait, as in the controller. Strategies run with the product's defaults.

``trials_to_1pct``: under the hard objective, the median over seeds of the completed trials
until the first reward within 1% of the optimum (``--max-trials`` when not reached; see
``reached``); ``trials_to_1pct_soft`` is the same under the soft objective, whose flatter
reward puts many more networks within 1%. ``soft`` and ``hard``: where PPO's samples land under each
objective, over the last half of runs of at least ``--constraint-trials``: the fraction
within 10% of ``T`` and the fraction above ``T``. PyTorch runs on one intra-op thread
(``--torch-threads``). The last line printed is one JSON object.

    python benchmarks/search_efficiency.py [--seeds 5] [--in-flight 8] [--max-trials 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from mnas.cost import count
from mnas.space import DECISIONS_PER_BLOCK, SearchSpace
from services.controller.strategies import Outcome, StrategyConfig, make_strategy
from services.reward.rewards import Kind, Objective, reward

RESOLUTION = 224
NUM_CLASSES = 1000
TARGET_SECONDS = 0.075
SECONDS_PER_MAC = TARGET_SECONDS / 300_774_272  # MobileNetV2 1.0 at 75 ms
ACC_MAX = 0.95
LANDSCAPE_SEED = 20190101
IMPORTANCE_DECAY = 3.0  # the random part of decision i weighs exp(-rank_i / this)
CAPACITY = 0.1  # weight of the multiply-adds part
ELASTICITY = 0.07  # d ln(accuracy) / d ln(latency) at T
CURVATURE = 0.2  # how fast that elasticity falls with ln(latency / T)
CENTER = -2.5  # sigmoid center: mean of S plus this many standard deviations
SCALE = 1.0  # sigmoid scale in standard deviations of S
WITHIN = 0.01

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
PER = len(DECISIONS_PER_BLOCK)
FILTERS = DECISIONS_PER_BLOCK.index("filters")


@dataclass(frozen=True)
class Optimum:
    """The best point of the space under one objective."""

    reward: float
    decisions: tuple[int, ...]
    latency_seconds: float
    accuracy: float


class Landscape:
    """The synthetic accuracy and the analytic latency over one space."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.sizes = [d.size for d in space.decisions]
        self.choices = list(np.ndindex(*self.sizes[:PER]))  # one block's choice tuples
        self._block_macs = self._tables()
        rng = np.random.default_rng(LANDSCAPE_SEED)
        noise = [rng.standard_normal(size) for size in self.sizes]
        importance = np.exp(-rng.permutation(len(self.sizes)) / IMPORTANCE_DECAY)
        weights = []
        for i, size in enumerate(self.sizes):
            b, k = divmod(i, PER)
            macs = self._block_macs[b].mean(axis=0)  # per block choice, over arriving filters
            per_choice = np.array(
                [macs[[c[k] == v for c in self.choices]].mean() for v in range(size)]
            )
            capacity = np.log(per_choice / per_choice.mean())
            capacity = capacity / (capacity.std() or 1.0)
            weights.append(importance[i] * noise[i] + CAPACITY * capacity)
        self.weights = weights
        mean = sum(float(w.mean()) for w in weights)
        spread = math.sqrt(sum(float(w.var()) for w in weights))
        self.center = mean + CENTER * spread
        self.scale = SCALE * spread

    # -- the objective -----------------------------------------------------------------

    def score(self, decisions: Sequence[int]) -> float:
        return float(sum(w[c] for w, c in zip(self.weights, decisions, strict=True)))

    def accuracy(self, score: float, latency: float) -> float:
        x = math.log(latency / TARGET_SECONDS)
        capacity = math.exp(ELASTICITY * x - CURVATURE * x * x / 2)
        return capacity * ACC_MAX / (1.0 + math.exp(-(score - self.center) / self.scale))

    def latency(self, decisions: Sequence[int]) -> float:
        arch = self.space.to_architecture(list(decisions))
        macs = count(arch, resolution=RESOLUTION, num_classes=NUM_CLASSES).macs
        return macs * SECONDS_PER_MAC

    def evaluate(self, decisions: Sequence[int], objective: Objective) -> tuple[float, float]:
        """(reward, latency seconds) of one point."""
        latency = self.latency(decisions)
        accuracy = self.accuracy(self.score(decisions), latency)
        return reward(accuracy, latency, objective), latency

    # -- exact optimum -----------------------------------------------------------------

    def _arch_macs(self, decisions: Sequence[int]) -> tuple[int, list[int], int, int]:
        report = count(
            self.space.to_architecture(list(decisions)),
            resolution=RESOLUTION,
            num_classes=NUM_CLASSES,
        )
        return report.macs, [b.macs for b in report.blocks], report.stem.macs, report.head.macs

    def _tables(self) -> list[_I64]:
        """Per block, its multiply-adds ``[previous block's filters choice, block choice]``;
        sets the stem's and, per last filters choice, the head's."""
        reference = self.space.reference_decisions()
        nf = self.sizes[FILTERS]
        tables = []
        for b in range(self.space.num_blocks):
            table = np.zeros((nf, len(self.choices)), dtype=np.int64)
            for j in range(nf):
                for ci, choice in enumerate(self.choices):
                    point = list(reference)
                    point[b * PER : (b + 1) * PER] = choice
                    if b > 0:
                        point[(b - 1) * PER + FILTERS] = j
                    table[j, ci] = self._arch_macs(point)[1][b]
                if b == 0:
                    table[1:] = table[0]
                    break
            tables.append(table)
        self._stem = self._arch_macs(reference)[2]
        self._head = []
        for j in range(nf):
            point = list(reference)
            point[-PER + FILTERS] = j
            self._head.append(self._arch_macs(point)[3])
        return tables

    def split_macs(self, decisions: Sequence[int]) -> int:
        """Multiply-adds from the per-block tables (checked against ``count``)."""
        total = self._stem + self._head[decisions[-PER + FILTERS]]
        for b in range(self.space.num_blocks):
            block = tuple(decisions[b * PER : (b + 1) * PER])
            previous = decisions[(b - 1) * PER + FILTERS] if b > 0 else 0
            total += int(self._block_macs[b][previous, self.choices.index(block)])
        return total

    def optimum(self, objective: Objective) -> Optimum:
        """The best reward over the whole space, exactly (Pareto front DP over blocks)."""
        nf = self.sizes[FILTERS]
        block_scores = []
        for b in range(self.space.num_blocks):
            w = self.weights[b * PER : (b + 1) * PER]
            block_scores.append(
                np.array([sum(w[k][c[k]] for k in range(PER)) for c in self.choices])
            )
        filters_of = np.array([c[FILTERS] for c in self.choices])
        # Fronts per filters choice of the last block so far: macs, score, and the path.
        fronts: list[tuple[_I64, _F64, list[_I64]]] = [
            (np.array([self._stem], dtype=np.int64), np.zeros(1), [])
        ]
        for b in range(self.space.num_blocks):
            candidates: list[list[tuple[_I64, _F64, list[_I64]]]] = [[] for _ in range(nf)]
            for j, (macs, scores, path) in enumerate(fronts):
                add_macs = self._block_macs[b][j]
                new_macs = (macs[:, None] + add_macs[None, :]).ravel()
                new_scores = (scores[:, None] + block_scores[b][None, :]).ravel()
                parent = np.repeat(np.arange(len(macs)), len(self.choices))
                choice = np.tile(np.arange(len(self.choices)), len(macs))
                new_path = [p[parent] for p in path] + [choice]
                for f in range(nf):
                    keep = filters_of[choice] == f
                    candidates[f].append(
                        (new_macs[keep], new_scores[keep], [p[keep] for p in new_path])
                    )
            fronts = []
            for parts in candidates:
                macs = np.concatenate([p[0] for p in parts])
                scores = np.concatenate([p[1] for p in parts])
                paths = [np.concatenate([p[2][k] for p in parts]) for k in range(len(parts[0][2]))]
                fronts.append(_pareto(macs, scores, paths))
        best: Optimum | None = None
        for f, (macs, scores, paths) in enumerate(fronts):
            total = macs + self._head[f]
            for i in range(len(total)):
                latency = float(total[i]) * SECONDS_PER_MAC
                accuracy = self.accuracy(float(scores[i]), latency)
                value = reward(accuracy, latency, objective)
                if best is None or value > best.reward:
                    decisions = tuple(int(v) for p in paths for v in self.choices[int(p[i])])
                    best = Optimum(value, decisions, latency, accuracy)
        assert best is not None
        return best


def _pareto(macs: _I64, scores: _F64, paths: list[_I64]) -> tuple[_I64, _F64, list[_I64]]:
    """The points no other point beats on both fewer multiply-adds and a higher score."""
    order = np.lexsort((-scores, macs))
    macs, scores = macs[order], scores[order]
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], scores[:-1]]))
    keep = scores > best_before
    return macs[keep], scores[keep], [p[order][keep] for p in paths]


@dataclass
class Run:
    """One search: when it first came within 1%, and the latency of every sample."""

    trials_to_target: int | None
    latencies: list[float]
    seconds: float
    best: float


def simulate(
    name: str,
    seed: int,
    landscape: Landscape,
    objective: Objective,
    target: float,
    *,
    max_trials: int,
    min_trials: int,
    in_flight: int,
    config: StrategyConfig,
) -> Run:
    """One asynchronous search, until a reward reaches ``target`` (and at least
    ``min_trials`` completed) or ``max_trials`` completed."""
    started = time.perf_counter()
    strategy = make_strategy(name, landscape.space, seed, config)
    workers = random.Random(seed + 1)
    outstanding = []
    number = 0
    for _ in range(in_flight):
        outstanding.append((number, strategy.propose()))
        number += 1
    reached: int | None = None
    latencies = []
    best = -math.inf
    for completed in range(1, max_trials + 1):
        done_number, proposal = outstanding.pop(workers.randrange(len(outstanding)))
        value, latency = landscape.evaluate(proposal.decisions, objective)
        latencies.append(latency)
        best = max(best, value)
        if reached is None and value >= target:
            reached = completed
        strategy.observe(Outcome(done_number, proposal.decisions, value, proposal.log_probs))
        if reached is not None and completed >= min_trials:
            break
        outstanding.append((number, strategy.propose()))
        number += 1
    return Run(reached, latencies, time.perf_counter() - started, best)


def _late_latencies(runs: Sequence[Run]) -> dict[str, float]:
    """Where the last half of each run's samples landed relative to ``T``."""
    late = [x for run in runs for x in run.latencies[len(run.latencies) // 2 :]]
    return {
        "within_10pct": round(sum(abs(x / TARGET_SECONDS - 1) <= 0.1 for x in late) / len(late), 3),
        "above_target": round(sum(x > TARGET_SECONDS for x in late) / len(late), 3),
        "median_latency_ms": round(1e3 * statistics.median(late), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--max-trials", type=int, default=20000, help="cap, hard objective")
    parser.add_argument("--soft-max-trials", type=int, default=5000, help="cap, soft objective")
    parser.add_argument(
        "--constraint-trials",
        type=int,
        default=2000,
        help="PPO runs at least this long; the last half gives the latency fractions",
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    # One intra-op thread: PPO's small matrix products gain nothing from more, and on a
    # loaded machine OpenMP threads waiting for each other made an update 100x slower.
    torch.set_num_threads(args.torch_threads)
    started = time.perf_counter()
    space = SearchSpace(resolution=RESOLUTION, num_classes=NUM_CLASSES)
    landscape = Landscape(space)
    check = random.Random(0)
    for _ in range(200):
        point = space.sample_decisions(check)
        assert landscape.split_macs(point) * SECONDS_PER_MAC == landscape.latency(point)
    objectives = {
        "hard": Objective.of(Kind.HARD, TARGET_SECONDS),
        "soft": Objective.of(Kind.SOFT, TARGET_SECONDS),
    }
    optima = {key: landscape.optimum(objective) for key, objective in objectives.items()}
    for key, objective in objectives.items():
        opt = optima[key]
        assert math.isclose(landscape.evaluate(opt.decisions, objective)[0], opt.reward)
    config = StrategyConfig()
    seeds = list(range(args.seeds))
    caps = {"hard": args.max_trials, "soft": args.soft_max_trials}
    runs: dict[str, dict[str, list[Run]]] = {"hard": {}, "soft": {}}
    for key, objective in objectives.items():
        target = optima[key].reward * (1.0 - WITHIN)
        for name in ("ppo", "evolution", "random"):
            runs[key][name] = [
                simulate(
                    name,
                    s,
                    landscape,
                    objective,
                    target,
                    max_trials=caps[key],
                    min_trials=args.constraint_trials if name == "ppo" else 0,
                    in_flight=args.in_flight,
                    config=config,
                )
                for s in seeds
            ]

    def trials(key: str) -> dict[str, int]:
        return {
            name: int(statistics.median(r.trials_to_target or caps[key] for r in rs))
            for name, rs in runs[key].items()
        }

    result = {
        "trials_to_1pct": trials("hard"),
        "soft": _late_latencies(runs["soft"]["ppo"]),
        "hard": _late_latencies(runs["hard"]["ppo"]),
        "objective": "hard",
        "trials_to_1pct_soft": trials("soft"),
        "reached": {
            key: {
                name: f"{sum(r.trials_to_target is not None for r in rs)}/{len(rs)}"
                for name, rs in by_name.items()
            }
            for key, by_name in runs.items()
        },
        "per_seed": {
            key: {name: [r.trials_to_target for r in rs] for name, rs in by_name.items()}
            for key, by_name in runs.items()
        },
        "optimum": {
            key: {
                "reward": round(o.reward, 5),
                "latency_ms": round(1e3 * o.latency_seconds, 3),
                "accuracy": round(o.accuracy, 5),
            }
            for key, o in optima.items()
        },
        "caps": caps,
        "seeds": seeds,
        "in_flight": args.in_flight,
        "constraint_trials": args.constraint_trials,
        "search_seconds": {
            key: {name: round(sum(r.seconds for r in rs), 1) for name, rs in by_name.items()}
            for key, by_name in runs.items()
        },
        "torch_threads": args.torch_threads,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

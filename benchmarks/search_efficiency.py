"""How many trials mnas's strategies and Optuna's samplers need on known landscapes.

No training: fixed synthetic objectives over the default 42-decision space (7 blocks)
whose optimum is known to within a few parts in 100,000.

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
- Two landscapes. ``additive``: ``S`` is the sum of the weights. ``interacting``: ``S``
  also has one term per pair of neighbouring blocks, a function of both blocks'
  ``INTERACTING`` choices (op and kernel: what suits a block depends on the blocks beside
  it); each term is random with zero row and column means, so it is pure interaction, and
  the terms make up ``INTERACTION`` (half) of ``S``'s variance. The latency interacts in
  both: a block's multiply-adds depend on the filters of the block before it.
- Reward: ``services.reward.rewards.reward`` with the paper's hard (alpha = 0, beta = -1)
  and soft (alpha = beta = -0.07) objectives at ``T``. A landscape under one objective is
  a case: four in all.

Under the soft objective ``log reward = log sigmoid(...) - CURVATURE * x**2 / 2``: a
network at ``T`` is worth most and deviations either way cost alike, so a search keeps
exploring both sides of ``T``. Under the hard one the reward grows up to ``T`` and falls
as ``(latency / T)**-1`` above it, so a search concentrates just below ``T``.

The optimum. Multiply-adds split exactly into stem + one term per block + head, where
block ``b``'s term depends only on its own six choices and the filters of the block before
it (the head's on the last block's filters); a dynamic program over the blocks keeps, per
state (the last block's filters, and its op and kernel when they interact), the exact
front of the partial networks on (fewest multiply-adds, greatest ``S``). The reward is
``g(S) * h(latency)`` with ``g`` increasing and ``h`` peaking at ``T``, so the front bounds
every network (none with multiply-adds between two neighbours on the front scores above
the first): ``bound`` is the highest reward that allows. The best network is the front's
best, improved by single-decision changes until none helps; it comes within 1e-4 of
``bound`` (both are printed). A search reaches the target at 99% of ``bound``. The split is
checked against ``count`` on random networks and on the best ones.

The methods: every registered mnas strategy with the product's defaults, and as peers
Optuna's ``TPESampler`` and ``NSGAIISampler`` run as an Optuna user would, ask-and-tell on
an in-memory study with one categorical parameter per decision and the sampler's
defaults. Each search keeps ``--in-flight`` trials outstanding: whenever a randomly chosen
one finishes, it is observed and the next is proposed, so outcomes arrive out of order
while other proposals wait, as in the controller. Every method sees the same seeds and the
same order of finishing.

``trials_to_1pct``: per case and method, the median over seeds of the completed trials
until the first reward within 1% of the optimum (the case's cap, ``--max-trials`` or
``--soft-max-trials``, when not reached; see ``reached``). ``best_peer``: the peer with the
fewest per case; ``default_within_best_peer``: whether the default strategy (the one a
spec without ``strategy`` gets) needs no more. ``soft`` and ``hard``: where PPO's samples
land on the additive landscape, over the last half of runs of at least
``--constraint-trials``: the fraction within 10% of ``T`` and the fraction above ``T``.
PyTorch runs on one intra-op thread (``--torch-threads``). A Markdown table of the
medians comes first; the last line printed is one JSON object. Searches run in
``--jobs`` processes (one per usable core by default); ``--seeds 20`` gives steadier
medians (the medians of seeds 0-9 and 10-19 of one method differ by a quarter to a half)
in twice the time, and ``--methods`` and ``--landscapes`` pick a part.

    python benchmarks/search_efficiency.py [--seeds 10] [--jobs N] [--in-flight 8]
        [--methods ppo,tpe,optuna:TPESampler] [--landscapes additive,interacting]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution

from mnas.cost import count
from mnas.defaults import DEFAULT_STRATEGY
from mnas.space import DECISIONS_PER_BLOCK, SearchSpace
from services.controller.strategies import STRATEGIES, make_strategy
from services.controller.strategy import Outcome, Proposal, StrategyConfig
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
INTERACTION = 0.5  # the interacting landscape: share of the score's variance from pairs
INTERACTING = ("op", "kernel")  # the choices of a block that interact with its neighbours'
CLIMB_STARTS = 20  # front points the best point is searched from
PAIRED = tuple(DECISIONS_PER_BLOCK.index(name) for name in INTERACTING)


@dataclass(frozen=True)
class Optimum:
    """The best point of the space under one objective."""

    reward: float
    decisions: tuple[int, ...]
    latency_seconds: float
    accuracy: float
    bound: float  # no point of the space has a higher reward


class Landscape:
    """The synthetic accuracy and the analytic latency over one space; ``interaction``: the
    share of the score's variance that comes from neighbouring blocks' choices together."""

    def __init__(
        self, space: SearchSpace, interaction: float = 0.0, *, tables: Landscape | None = None
    ) -> None:
        self.space = space
        self.interaction = interaction
        self.sizes = [d.size for d in space.decisions]
        self.choices = list(np.ndindex(*self.sizes[:PER]))  # one block's choice tuples
        self._choice_index = {c: i for i, c in enumerate(self.choices)}
        self._block_macs: list[_I64]  # per block [previous filters choice, block choice]
        self._stem: int
        self._head: list[int]  # per last filters choice
        if tables is None:
            self._block_macs, self._stem, self._head = self._tables()
        else:  # the multiply-adds of another landscape over the same space
            self._block_macs, self._stem, self._head = (
                tables._block_macs,
                tables._stem,
                tables._head,
            )
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
        variance = sum(float(w.var()) for w in weights)
        self.pairs = self._pairs(variance) if interaction else []
        mean = sum(float(w.mean()) for w in weights)
        spread = math.sqrt(variance + sum(float(m.var()) for m in self.pairs))
        self.center = mean + CENTER * spread
        self.scale = SCALE * spread

    def _pairs(self, additive_variance: float) -> list[_F64]:
        """Per pair of neighbouring blocks, a term per (first's, second's) ``INTERACTING``
        choices: random, with every row and column mean zero (so the terms are uncorrelated
        with the per-decision weights and each other, and the variances add up), scaled so
        that they make up ``interaction`` of the score's variance."""
        rng = np.random.default_rng(LANDSCAPE_SEED + 1)
        n = math.prod(self.sizes[k] for k in PAIRED)
        pairs = []
        for _ in range(self.space.num_blocks - 1):
            m = rng.standard_normal((n, n))
            pairs.append(m - m.mean(axis=0) - m.mean(axis=1, keepdims=True) + m.mean())
        total = sum(float(m.var()) for m in pairs)
        factor = math.sqrt(self.interaction / (1.0 - self.interaction) * additive_variance / total)
        return [factor * m for m in pairs]

    def _pair_index(self, block_choice: Sequence[int]) -> int:
        """The index of a block's ``INTERACTING`` choices in its rows of ``pairs``."""
        index = 0
        for k in PAIRED:
            index = index * self.sizes[k] + int(block_choice[k])
        return index

    # -- the objective -----------------------------------------------------------------

    def score(self, decisions: Sequence[int]) -> float:
        total = float(sum(w[c] for w, c in zip(self.weights, decisions, strict=True)))
        if self.pairs:
            index = [
                self._pair_index(decisions[b * PER : (b + 1) * PER])
                for b in range(self.space.num_blocks)
            ]
            total += float(
                sum(m[i, j] for m, i, j in zip(self.pairs, index, index[1:], strict=False))
            )
        return total

    def accuracy(self, score: float, latency: float) -> float:
        x = math.log(latency / TARGET_SECONDS)
        capacity = math.exp(ELASTICITY * x - CURVATURE * x * x / 2)
        return capacity * ACC_MAX / (1.0 + math.exp(-(score - self.center) / self.scale))

    def latency(self, decisions: Sequence[int]) -> float:
        """Seconds, from the per-block multiply-adds (checked against ``count`` in main)."""
        return self.split_macs(decisions) * SECONDS_PER_MAC

    def counted_latency(self, decisions: Sequence[int]) -> float:
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

    def _tables(self) -> tuple[list[_I64], int, list[int]]:
        """Per block, its multiply-adds ``[previous block's filters choice, block choice]``;
        the stem's, and per last filters choice the head's."""
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
        head = []
        for j in range(nf):
            point = list(reference)
            point[-PER + FILTERS] = j
            head.append(self._arch_macs(point)[3])
        return tables, self._arch_macs(reference)[2], head

    def split_macs(self, decisions: Sequence[int]) -> int:
        """Multiply-adds from the per-block tables."""
        total: int = self._stem + self._head[decisions[-PER + FILTERS]]
        for b in range(self.space.num_blocks):
            block = tuple(decisions[b * PER : (b + 1) * PER])
            previous = decisions[(b - 1) * PER + FILTERS] if b > 0 else 0
            total += int(self._block_macs[b][previous, self._choice_index[block]])
        return total

    def optimum(self, objective: Objective) -> Optimum:
        """The best reward over the whole space, exactly (from :meth:`front`)."""
        return self._bracket(objective, *self.front())

    def front(self) -> tuple[_I64, _F64, list[_I64]]:
        """Every network no other beats on both fewer multiply-adds and a higher score, by
        a Pareto front DP over the blocks: their multiply-adds (increasing), scores
        (increasing) and, per block, the index of its choices in ``choices``.

        A state is what the next block's terms depend on: the last block's filters choice
        (its multiply-adds) and, with interactions, its ``INTERACTING`` choices.
        """
        block_scores = []
        for b in range(self.space.num_blocks):
            w = self.weights[b * PER : (b + 1) * PER]
            block_scores.append(
                np.array([sum(w[k][c[k]] for k in range(PER)) for c in self.choices])
            )
        filters_of = np.array([c[FILTERS] for c in self.choices])
        pair_of = np.array([self._pair_index(c) for c in self.choices])
        # The state after each block choice: (filters, pair) when paired, else filters.
        width = int(pair_of.max()) + 1 if self.pairs else 1
        state_of = filters_of * width + (pair_of if self.pairs else 0)
        states = self.sizes[FILTERS] * width
        # Per state: multiply-adds, score, and the path of block choices, on the front.
        fronts: dict[int, tuple[_I64, _F64, list[_I64]]] = {
            -1: (np.array([self._stem], dtype=np.int64), np.zeros(1), [])
        }
        for b in range(self.space.num_blocks):
            candidates: list[list[tuple[_I64, _F64, list[_I64]]]] = [[] for _ in range(states)]
            for state, (macs, scores, path) in fronts.items():
                previous_filters = max(state, 0) // width
                add_macs = self._block_macs[b][previous_filters]
                add_scores = block_scores[b]
                if self.pairs and state >= 0:
                    add_scores = add_scores + self.pairs[b - 1][state % width, pair_of]
                new_macs = (macs[:, None] + add_macs[None, :]).ravel()
                new_scores = (scores[:, None] + add_scores[None, :]).ravel()
                parent = np.repeat(np.arange(len(macs)), len(self.choices))
                choice = np.tile(np.arange(len(self.choices)), len(macs))
                new_path = [p[parent] for p in path] + [choice]
                new_state = state_of[choice]
                order = np.argsort(new_state, kind="stable")
                bounds = np.searchsorted(new_state[order], np.arange(states + 1))
                for s in range(states):
                    keep = order[bounds[s] : bounds[s + 1]]
                    if len(keep):
                        candidates[s].append(
                            (new_macs[keep], new_scores[keep], [p[keep] for p in new_path])
                        )
            fronts = {}
            for s, parts in enumerate(candidates):
                if not parts:
                    continue
                macs = np.concatenate([p[0] for p in parts])
                scores = np.concatenate([p[1] for p in parts])
                paths = [np.concatenate([p[2][k] for p in parts]) for k in range(len(parts[0][2]))]
                fronts[s] = _pareto(macs, scores, paths)
        # One front over the finished networks, the head included.
        macs = np.concatenate([m + self._head[s // width] for s, (m, _, _) in fronts.items()])
        scores = np.concatenate([f[1] for f in fronts.values()])
        paths = [
            np.concatenate([f[2][b] for f in fronts.values()]) for b in range(self.space.num_blocks)
        ]
        return _pareto(macs, scores, paths)

    def _value(self, score: float, macs: float, objective: Objective) -> float:
        latency = macs * SECONDS_PER_MAC
        return reward(self.accuracy(score, latency), latency, objective)

    def _bracket(
        self, objective: Objective, macs: _I64, scores: _F64, paths: list[_I64]
    ) -> Optimum:
        """The best point and an upper bound on any point's reward, from the front.

        The reward is ``g(score) * h(latency)``, ``g`` increasing and ``h`` peaking at ``T``
        (both objectives), so the front's points are not all candidates (one below ``T``
        may lose to a point with more multiply-adds and a lower score) but they bound
        every point: no point with multiply-adds in ``[M_i, M_i+1)`` scores above ``S_i``.
        The best point is the best on the front, improved by single-decision changes.
        """
        target_macs = TARGET_SECONDS / SECONDS_PER_MAC
        bound = -math.inf
        for i in range(len(macs)):
            high = float(macs[i + 1]) if i + 1 < len(macs) else math.inf
            at = [float(macs[i])] + ([min(target_macs, high)] if target_macs > macs[i] else [])
            bound = max(bound, *(self._value(float(scores[i]), m, objective) for m in at))
        values = [
            self._value(float(scores[i]), float(macs[i]), objective) for i in range(len(macs))
        ]
        starts = np.argsort(values)[::-1][:CLIMB_STARTS]
        best: tuple[float, tuple[int, ...]] = (-math.inf, ())
        for i in starts:
            point = tuple(int(v) for p in paths for v in self.choices[int(p[i])])
            best = max(best, self._climb(point, objective))
        value, decisions = best
        latency = self.latency(decisions)
        return Optimum(
            value, decisions, latency, self.accuracy(self.score(decisions), latency), bound
        )

    def _climb(self, point: tuple[int, ...], objective: Objective) -> tuple[float, tuple[int, ...]]:
        """Steepest ascent over single-decision changes from ``point``."""
        value = self.evaluate(point, objective)[0]
        while True:
            neighbours = [
                (*point[:i], v, *point[i + 1 :])
                for i, size in enumerate(self.sizes)
                for v in range(size)
                if v != point[i]
            ]
            best_value, best = max((self.evaluate(n, objective)[0], n) for n in neighbours)
            if best_value <= value:
                return value, point
            value, point = best_value, best


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


class Searcher(Protocol):
    """A search method driven trial by trial: a proposal and a token to report it with."""

    def propose(self) -> tuple[tuple[int, ...], Any]: ...

    def observe(self, number: int, token: Any, value: float) -> None: ...


class StrategySearcher:
    """One of mnas's strategies, with the product's defaults."""

    def __init__(self, name: str, space: SearchSpace, seed: int) -> None:
        self.strategy = make_strategy(name, space, seed, StrategyConfig())

    def propose(self) -> tuple[tuple[int, ...], Proposal]:
        proposal = self.strategy.propose()
        return proposal.decisions, proposal

    def observe(self, number: int, token: Proposal, value: float) -> None:
        self.strategy.observe(Outcome(number, token.decisions, value, token.log_probs))


class OptunaSearcher:
    """An Optuna sampler as a user would run it: ask-and-tell on an in-memory study, one
    categorical parameter per decision, the sampler's defaults and the seed."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, space: SearchSpace) -> None:
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.distributions: dict[str, BaseDistribution] = {
            d.name: CategoricalDistribution(list(range(d.size))) for d in space.decisions
        }

    def propose(self) -> tuple[tuple[int, ...], optuna.Trial]:
        trial = self.study.ask(self.distributions)
        return tuple(int(trial.params[name]) for name in self.distributions), trial

    def observe(self, number: int, token: optuna.Trial, value: float) -> None:
        self.study.tell(token, value)


PEERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "optuna:TPESampler": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "optuna:NSGAIISampler": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
}


def searcher(method: str, space: SearchSpace, seed: int) -> Searcher:
    if method in PEERS:
        return OptunaSearcher(PEERS[method](seed), space)
    return StrategySearcher(method, space, seed)


def simulate(
    method: str,
    seed: int,
    landscape: Landscape,
    objective: Objective,
    target: float,
    *,
    max_trials: int,
    min_trials: int,
    in_flight: int,
) -> Run:
    """One asynchronous search, until a reward reaches ``target`` (and at least
    ``min_trials`` completed) or ``max_trials`` completed."""
    started = time.perf_counter()
    search = searcher(method, landscape.space, seed)
    workers = random.Random(seed + 1)
    outstanding = []
    number = 0
    for _ in range(in_flight):
        outstanding.append((number, *search.propose()))
        number += 1
    reached: int | None = None
    latencies = []
    best = -math.inf
    for completed in range(1, max_trials + 1):
        done_number, decisions, token = outstanding.pop(workers.randrange(len(outstanding)))
        value, latency = landscape.evaluate(decisions, objective)
        latencies.append(latency)
        best = max(best, value)
        if reached is None and value >= target:
            reached = completed
        search.observe(done_number, token, value)
        if reached is not None and completed >= min_trials:
            break
        outstanding.append((number, *search.propose()))
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


@dataclass(frozen=True)
class Case:
    """A landscape under one objective, and the reward a search must reach."""

    name: str
    landscape: Landscape
    objective: Objective
    optimum: Optimum
    cap: int

    @property
    def target(self) -> float:
        return (1.0 - WITHIN) * self.optimum.bound


@dataclass(frozen=True)
class Task:
    case: str
    method: str
    seed: int
    min_trials: int


_CASES: dict[str, Case] = {}


def _set_cases(cases: dict[str, Case], torch_threads: int) -> None:
    """Worker set-up: the cases to run searches on."""
    # One intra-op thread: PPO's small matrix products gain nothing from more, and on a
    # loaded machine OpenMP threads waiting for each other made an update 100x slower.
    torch.set_num_threads(torch_threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _CASES.update(cases)


def _run(task: Task, in_flight: int) -> Run:
    case = _CASES[task.case]
    return simulate(
        task.method,
        task.seed,
        case.landscape,
        case.objective,
        case.target,
        max_trials=case.cap,
        min_trials=task.min_trials,
        in_flight=in_flight,
    )


def _cases(args: argparse.Namespace) -> dict[str, Case]:
    space = SearchSpace(resolution=RESOLUTION, num_classes=NUM_CLASSES)
    additive = Landscape(space)
    landscapes = {
        "additive": additive,
        "interacting": Landscape(space, INTERACTION, tables=additive),
    }
    check = random.Random(0)
    for _ in range(200):
        point = space.sample_decisions(check)
        assert additive.latency(point) == additive.counted_latency(point)
    objectives = {
        "hard": Objective.of(Kind.HARD, TARGET_SECONDS),
        "soft": Objective.of(Kind.SOFT, TARGET_SECONDS),
    }
    caps = {"hard": args.max_trials, "soft": args.soft_max_trials}
    cases = {}
    for landscape_name in args.landscapes.split(","):
        landscape = landscapes[landscape_name]
        for key, objective in objectives.items():
            optimum = landscape.optimum(objective)
            assert landscape.latency(optimum.decisions) == landscape.counted_latency(
                optimum.decisions
            )
            assert optimum.reward <= optimum.bound
            name = f"{landscape_name}/{key}"
            cases[name] = Case(name, landscape, objective, optimum, caps[key])
    return cases


def _table(
    trials: dict[str, dict[str, int]], reached: dict[str, dict[str, str]], default: str
) -> str:
    """Methods by cases, as Markdown."""
    cases = list(trials)
    methods = list(next(iter(trials.values())))
    lines = [
        "| method | " + " | ".join(cases) + " |",
        "| --- | " + " | ".join("---:" for _ in cases) + " |",
    ]
    for method in methods:
        label = f"{method} (default)" if method == default else method
        cells = []
        for case in cases:
            cell = f"{trials[case][method]:,}"
            done, total = reached[case][method].split("/")
            cells.append(cell if done == total else f"{cell} ({done}/{total} reached)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--max-trials", type=int, default=20000, help="cap, hard objective")
    parser.add_argument("--soft-max-trials", type=int, default=5000, help="cap, soft objective")
    parser.add_argument(
        "--constraint-trials",
        type=int,
        default=2000,
        help="PPO runs at least this long on the additive landscape; the last half gives "
        "the latency fractions",
    )
    parser.add_argument(
        "--methods",
        default=",".join([*sorted(STRATEGIES), *PEERS]),
        help="mnas strategies and Optuna samplers, comma-separated",
    )
    parser.add_argument("--landscapes", default="additive,interacting")
    parser.add_argument(
        "--jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="searches run at once, in processes (default: one per usable core)",
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    cases = _cases(args)
    methods = args.methods.split(",")
    seeds = list(range(args.seeds))
    tasks = [
        Task(
            case,
            method,
            seed,
            args.constraint_trials if method == "ppo" and case.startswith("additive/") else 0,
        )
        for case in cases
        for method in methods
        for seed in seeds
    ]
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            args.jobs,
            mp_context=context,
            initializer=_set_cases,
            initargs=(cases, args.torch_threads),
        ) as pool:
            results = list(pool.map(_run, tasks, [args.in_flight] * len(tasks)))
    else:
        _set_cases(cases, args.torch_threads)
        results = [_run(task, args.in_flight) for task in tasks]
    runs: dict[str, dict[str, list[Run]]] = {case: {m: [] for m in methods} for case in cases}
    for task, run in zip(tasks, results, strict=True):
        runs[task.case][task.method].append(run)

    trials = {
        case: {
            method: int(statistics.median(r.trials_to_target or cases[case].cap for r in rs))
            for method, rs in by_method.items()
        }
        for case, by_method in runs.items()
    }
    reached = {
        case: {
            method: f"{sum(r.trials_to_target is not None for r in rs)}/{len(rs)}"
            for method, rs in by_method.items()
        }
        for case, by_method in runs.items()
    }
    peers = [m for m in methods if m in PEERS]
    best_peer = (
        {case: min(peers, key=lambda m: by_method[m]) for case, by_method in trials.items()}
        if peers
        else {}
    )
    result: dict[str, Any] = {
        "trials_to_1pct": trials,
        "default_strategy": DEFAULT_STRATEGY,
        "best_peer": best_peer,
    }
    if DEFAULT_STRATEGY in methods and peers:
        result["default_within_best_peer"] = {
            case: by_method[DEFAULT_STRATEGY] <= by_method[best_peer[case]]
            for case, by_method in trials.items()
        }
    if "ppo" in methods:
        for key in ("soft", "hard"):
            if f"additive/{key}" in runs:
                result[key] = _late_latencies(runs[f"additive/{key}"]["ppo"])
    result.update(
        {
            "reached": reached,
            "per_seed": {
                case: {m: [r.trials_to_target for r in rs] for m, rs in by_method.items()}
                for case, by_method in runs.items()
            },
            "optimum": {
                name: {
                    "reward": round(case.optimum.reward, 5),
                    "bound": round(case.optimum.bound, 5),
                    "latency_ms": round(1e3 * case.optimum.latency_seconds, 3),
                    "accuracy": round(case.optimum.accuracy, 5),
                }
                for name, case in cases.items()
            },
            "caps": {name: case.cap for name, case in cases.items()},
            "seeds": seeds,
            "in_flight": args.in_flight,
            "constraint_trials": args.constraint_trials,
            "search_seconds": {
                case: {m: round(sum(r.seconds for r in rs), 1) for m, rs in by_method.items()}
                for case, by_method in runs.items()
            },
            "jobs": args.jobs,
            "torch_threads": args.torch_threads,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    )
    print(_table(trials, reached, DEFAULT_STRATEGY))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

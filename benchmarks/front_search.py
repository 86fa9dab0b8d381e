"""How much of the accuracy-latency front a search without a target finds, against peers.

The landscapes of ``benchmarks/search_efficiency.py`` (``additive`` and ``interacting``:
a synthetic accuracy over the default 42-decision space and an exact latency from the
multiply-adds), searched for the front of accuracy (up) against latency (down) as an
objective ``pareto`` search does: mnas's strategies that can look for a front, told each
trial's accuracy and latency, and as peers Optuna's ``NSGAIISampler`` and ``TPESampler``
(its multi-objective TPE) run as an Optuna user would, ask-and-tell on a two-objective
study (accuracy, log latency), one categorical parameter per decision, the sampler's
defaults. ``--in-flight`` trials are outstanding; a randomly chosen one finishes next, the
same order for every method.

The figure: the hypervolume of the front a search found after ``--trials`` trials (and
after a quarter and a half of them) over the hypervolume of the exact front, in the plane
of log latency and accuracy, from a reference point a tenth of the exact front's range
beyond its slowest latency and its lowest accuracy. The exact front: the landscape's
dynamic program gives every network no other beats on both fewer multiply-adds and a
higher score; their accuracies make the reference front (real networks, so its
hypervolume is a lower bound of the best possible), and the same front with each point
raised to the highest accuracy its score allows up to the next point's latency bounds it
from above (``exact_front_gap``: how far apart the two are). ``hypervolume_ratio`` is the
median over seeds.

    python -m benchmarks.front_search [--seeds 10] [--trials 200] [--in-flight 8]
        [--methods tpe,random,optuna:NSGAIISampler,optuna:TPESampler] [--jobs N]
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
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from benchmarks.search_efficiency import (
    CURVATURE,
    ELASTICITY,
    INTERACTION,
    NUM_CLASSES,
    RESOLUTION,
    SECONDS_PER_MAC,
    TARGET_SECONDS,
    Landscape,
)
from mnas.pareto import pareto_front
from mnas.space import SearchSpace
from services.controller.strategies import STRATEGIES, make_strategy
from services.controller.strategy import Outcome, StrategyConfig

Point = tuple[float, float]  # (log latency, accuracy): the first down, the second up

PEERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "optuna:NSGAIISampler": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "optuna:TPESampler": lambda seed: optuna.samplers.TPESampler(seed=seed),
}
FRONT_STRATEGIES = sorted(name for name, cls in STRATEGIES.items() if cls.searches_front)
MARGIN = 0.1  # the reference point lies this share of the front's range beyond it


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The area the points dominate up to ``reference`` (first objective minimized, second
    maximized)."""
    inside = sorted(p for p in points if p[0] < reference[0] and p[1] > reference[1])
    ends = [x for x, _ in inside[1:]] + [reference[0]]
    area, best = 0.0, reference[1]
    for (x, y), end in zip(inside, ends[: len(inside)], strict=True):
        best = max(best, y)
        area += (end - x) * (best - reference[1])
    return area


def _front_points(points: Sequence[Point]) -> list[Point]:
    return pareto_front(points, accuracy=lambda p: p[1], latency=lambda p: p[0])


@dataclass(frozen=True)
class ExactFront:
    points: list[Point]  # real networks
    upper: list[Point]  # bounds every network
    reference: Point

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.points, self.reference)

    @property
    def gap(self) -> float:
        return hypervolume(self.upper, self.reference) / self.hypervolume - 1.0


def exact_front(landscape: Landscape) -> ExactFront:
    """The front of accuracy against log latency over the whole space (see the module's
    text)."""
    macs, scores, _ = landscape.front()
    latencies = [float(m) * SECONDS_PER_MAC for m in macs]
    points = [
        (math.log(lat), landscape.accuracy(float(s), lat))
        for lat, s in zip(latencies, scores, strict=True)
    ]
    upper = []
    for i, (lat, s) in enumerate(zip(latencies, scores, strict=True)):
        # No network with multiply-adds in [M_i, M_i+1) scores above S_i; its accuracy is
        # at most S_i's at the latency in that range where capacity pays most.
        end = latencies[i + 1] if i + 1 < len(latencies) else lat
        candidates = [lat, end, *_peak_within(lat, end)]
        upper.append((math.log(lat), max(landscape.accuracy(float(s), x) for x in candidates)))
    front = _front_points(points)
    xs, ys = [p[0] for p in front], [p[1] for p in front]
    reference = (
        max(xs) + MARGIN * (max(xs) - min(xs)),
        min(ys) - MARGIN * (max(ys) - min(ys)),
    )
    return ExactFront(front, _front_points(upper), reference)


def _peak_within(low: float, high: float) -> list[float]:
    """Where the accuracy's capacity factor peaks, if inside ``[low, high]``."""
    peak = TARGET_SECONDS * math.exp(ELASTICITY / CURVATURE)
    return [peak] if low <= peak <= high else []


class _Searcher:
    """One method over one landscape: proposals, and outcomes told back by number."""

    def __init__(self, method: str, space: SearchSpace, seed: int) -> None:
        self.peer = method in PEERS
        if self.peer:
            self.study = optuna.create_study(
                directions=["maximize", "minimize"], sampler=PEERS[method](seed)
            )
            self.distributions: dict[str, BaseDistribution] = {
                d.name: CategoricalDistribution(list(range(d.size))) for d in space.decisions
            }
        else:
            self.strategy = make_strategy(method, space, seed, StrategyConfig(front=True))

    def propose(self) -> tuple[tuple[int, ...], Any]:
        if self.peer:
            trial = self.study.ask(self.distributions)
            return tuple(int(trial.params[n]) for n in self.distributions), trial
        proposal = self.strategy.propose()
        return proposal.decisions, proposal

    def observe(self, number: int, token: Any, accuracy: float, latency: float) -> None:
        if self.peer:
            self.study.tell(token, [accuracy, math.log(latency)])
        else:
            self.strategy.observe(Outcome(number, token.decisions, accuracy, (), accuracy, latency))


def search(
    method: str, landscape: Landscape, seed: int, trials: int, in_flight: int
) -> list[Point]:
    """Every completed trial of one search, in the order they completed."""
    searcher = _Searcher(method, landscape.space, seed)
    workers = random.Random(seed + 1)
    outstanding = [(n, *searcher.propose()) for n in range(in_flight)]
    number = in_flight
    done: list[Point] = []
    while len(done) < trials:
        finished, decisions, token = outstanding.pop(workers.randrange(len(outstanding)))
        latency = landscape.latency(decisions)
        accuracy = landscape.accuracy(landscape.score(decisions), latency)
        done.append((math.log(latency), accuracy))
        searcher.observe(finished, token, accuracy, latency)
        outstanding.append((number, *searcher.propose()))
        number += 1
    return done


_LANDSCAPES: dict[str, tuple[Landscape, ExactFront]] = {}


def _setup(landscapes: dict[str, tuple[Landscape, ExactFront]]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _LANDSCAPES.update(landscapes)


def _ratios(task: tuple[str, str, int, int, int]) -> tuple[list[float], float]:
    """Hypervolume ratios after a quarter, half and all of the trials; seconds taken."""
    name, method, seed, trials, in_flight = task
    landscape, exact = _LANDSCAPES[name]
    started = time.perf_counter()
    done = search(method, landscape, seed, trials, in_flight)
    seconds = time.perf_counter() - started
    marks = [trials // 4, trials // 2, trials]
    return [hypervolume(done[:k], exact.reference) / exact.hypervolume for k in marks], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--methods", default=",".join([*FRONT_STRATEGIES, *PEERS]))
    parser.add_argument("--landscapes", default="additive,interacting")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    started = time.perf_counter()
    space = SearchSpace(resolution=RESOLUTION, num_classes=NUM_CLASSES)
    additive = Landscape(space)
    shapes = {"additive": additive, "interacting": Landscape(space, INTERACTION, tables=additive)}
    landscapes = {
        name: (shapes[name], exact_front(shapes[name])) for name in args.landscapes.split(",")
    }
    methods = args.methods.split(",")
    for method in methods:
        if method not in PEERS and method not in FRONT_STRATEGIES:
            parser.error(f"--methods: {method!r} cannot look for a front")
    tasks = [
        (name, method, seed, args.trials, args.in_flight)
        for name in landscapes
        for method in methods
        for seed in range(args.seeds)
    ]
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=context, initializer=_setup, initargs=(landscapes,)
        ) as pool:
            results = list(pool.map(_ratios, tasks))
    else:
        _setup(landscapes)
        results = [_ratios(task) for task in tasks]
    by: dict[str, dict[str, list[tuple[list[float], float]]]] = {
        name: {m: [] for m in methods} for name in landscapes
    }
    for (name, method, *_), result in zip(tasks, results, strict=True):
        by[name][method].append(result)
    marks = [args.trials // 4, args.trials // 2, args.trials]
    ratios = {
        name: {
            method: {
                str(k): round(statistics.median(r[0][i] for r in runs), 4)
                for i, k in enumerate(marks)
            }
            for method, runs in per.items()
        }
        for name, per in by.items()
    }
    last = str(args.trials)
    print(f"| method | {' | '.join(f'{n} @ {k}' for n in landscapes for k in marks)} |")
    print(f"| --- |{' ---: |' * len(landscapes) * len(marks)}")
    for method in methods:
        cells = [f"{ratios[n][method][str(k)]:.4f}" for n in landscapes for k in marks]
        print(f"| {method} | {' | '.join(cells)} |")
    peers = [m for m in methods if m in PEERS]
    print(
        json.dumps(
            {
                "hypervolume_ratio": {
                    n: {m: r[last] for m, r in per.items()} for n, per in ratios.items()
                },
                "hypervolume_ratio_by_trials": ratios,
                "best_peer": {n: max(peers, key=lambda m: ratios[n][m][last]) for n in ratios}
                if peers
                else {},
                "tpe_at_least_best_peer": {
                    n: all(ratios[n]["tpe"][last] >= ratios[n][m][last] for m in peers)
                    for n in ratios
                }
                if "tpe" in methods and peers
                else {},
                "exact_front": {
                    n: {"networks": len(e.points), "gap": round(e.gap, 6)}
                    for n, (_, e) in landscapes.items()
                },
                "per_seed": {
                    n: {m: [round(r[0][-1], 4) for r in runs] for m, runs in per.items()}
                    for n, per in by.items()
                },
                "search_seconds": {
                    n: {
                        m: round(statistics.median(r[1] for r in runs), 1)
                        for m, runs in per.items()
                    }
                    for n, per in by.items()
                },
                "trials": args.trials,
                "seeds": args.seeds,
                "in_flight": args.in_flight,
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

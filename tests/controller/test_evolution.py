"""Regularized (aging) evolution: mutation, tournament, aging."""

from __future__ import annotations

import random

from mnas.space import SearchSpace
from services.controller.evolution import EvolutionStrategy, mutate
from services.controller.strategy import EvolutionConfig, Outcome, StrategyConfig

SPACE = SearchSpace()
SIZES = [d.size for d in SPACE.decisions]


def evolution(population: int, sample_size: int, seed: int = 0) -> EvolutionStrategy:
    config = StrategyConfig(evolution=EvolutionConfig(population, sample_size))
    return EvolutionStrategy(SPACE, seed, config)


def point(rng: random.Random) -> tuple[int, ...]:
    return tuple(SPACE.sample_decisions(rng))


def test_mutation_changes_exactly_one_decision() -> None:
    rng = random.Random(0)
    changed = set()
    for _ in range(2000):
        parent = point(rng)
        child = mutate(parent, SIZES, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent, child, strict=True)) if a != b]
        assert len(diff) == 1
        assert 0 <= child[diff[0]] < SIZES[diff[0]]
        changed.add(diff[0])
    assert changed == set(range(len(SIZES)))


def test_mutation_skips_decisions_with_one_choice() -> None:
    rng = random.Random(0)
    sizes = [1, 3, 1, 2]
    for _ in range(200):
        child = mutate([0, 1, 0, 1], sizes, rng)
        assert child[0] == 0 and child[2] == 0
        assert sum(a != b for a, b in zip(child, [0, 1, 0, 1], strict=True)) == 1
    assert mutate([0, 0], [1, 1], rng) == [0, 0]


def test_random_samples_until_the_population_is_full() -> None:
    strategy = evolution(population=5, sample_size=2, seed=3)
    reference = random.Random(3)
    for n in range(4):
        proposal = strategy.propose()
        assert proposal.decisions == point(reference)
        assert proposal.log_probs == ()
        assert strategy.observe(Outcome(n, proposal.decisions, 0.5)) is True
    assert len(strategy.population) == 4
    assert strategy.propose().decisions == point(reference)


def test_aging_drops_the_oldest_whatever_its_reward() -> None:
    strategy = evolution(population=3, sample_size=3)
    rng = random.Random(1)
    members = [point(rng) for _ in range(5)]
    rewards = [0.99, 0.1, 0.2, 0.3, 0.4]
    for number, (decisions, reward) in zip(
        [10, 4, 7, 1, 2], zip(members, rewards, strict=True), strict=True
    ):
        strategy.observe(Outcome(number, decisions, reward))
    assert [m.number for m in strategy.population] == [7, 1, 2]  # arrival order, not number
    assert [m.reward for m in strategy.population] == [0.2, 0.3, 0.4]


def test_failed_trials_never_join_the_population() -> None:
    strategy = evolution(population=3, sample_size=2)
    decisions = tuple(SPACE.reference_decisions())
    assert strategy.observe(Outcome(0, decisions, None)) is False
    assert strategy.population == ()
    assert strategy.status().observed == 1


def test_children_mutate_the_tournament_winner() -> None:
    strategy = evolution(population=4, sample_size=4)
    rng = random.Random(2)
    members = [point(rng) for _ in range(4)]
    for n, decisions in enumerate(members):
        strategy.observe(Outcome(n, decisions, [0.5, 0.9, 0.1, 0.3][n]))
    winners = []
    for _ in range(300):
        child = strategy.propose().decisions
        distances = [sum(a != b for a, b in zip(child, m, strict=True)) for m in members]
        assert 1 in distances
        winners.append(distances.index(1))
    # Each tournament draws 4 of 4 with replacement: the best is in it 1 - (3/4)^4 = 68%
    # of the time, the worst wins only when drawn 4 times, 1/256.
    share = winners.count(1) / len(winners)
    assert 0.55 < share < 0.8
    assert winners.count(2) < 10


def test_a_larger_tournament_picks_the_best_more_often() -> None:
    rng = random.Random(5)
    members = [point(rng) for _ in range(8)]
    shares = []
    for sample_size in (1, 8):
        strategy = evolution(population=8, sample_size=sample_size)
        for n, decisions in enumerate(members):
            strategy.observe(Outcome(n, decisions, n / 10))
        best = members[-1]
        children = [strategy.propose().decisions for _ in range(400)]
        near_best = sum(sum(a != b for a, b in zip(c, best, strict=True)) == 1 for c in children)
        shares.append(near_best / len(children))
    assert shares[0] < 0.25 < 0.55 < shares[1]

"""Conformance suite: every registered strategy goes through the same checks.

A search drives a strategy the way the controller does: several proposals in flight,
outcomes back in a shuffled order, some trials failed. Each check runs for every name in
``STRATEGIES``, and again looking for a front (``name+front``) for those that can, with
small settings so that PPO updates, evolution mutates and TPE's estimators take over
within a few dozen trials.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
import torch

from mnas.space import SearchSpace
from services.controller.strategies import STRATEGIES, make_strategy
from services.controller.strategy import (
    EvolutionConfig,
    Outcome,
    PPOConfig,
    Proposal,
    Strategy,
    StrategyConfig,
    TPEConfig,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = SearchSpace()
SMALL = StrategyConfig(
    ppo=PPOConfig(batch_size=4, hidden_size=16, epochs=2),
    evolution=EvolutionConfig(population=4, sample_size=2),
    tpe=TPEConfig(startup_trials=5),
)
NAMES = sorted(STRATEGIES)
FRONT = "+front"
CASES = NAMES + [name + FRONT for name in NAMES if STRATEGIES[name].searches_front]


def reward_of(decisions: tuple[int, ...]) -> float:
    """A fixed reward: the share of decisions at their first choice."""
    return sum(d == 0 for d in decisions) / len(decisions)


def latency_of(decisions: tuple[int, ...]) -> float:
    """A fixed latency that grows with the choices' indices."""
    return 0.001 * (1 + sum(decisions))


def done(number: int, proposal: Proposal) -> Outcome:
    """The outcome of a completed trial: reward, accuracy (the reward) and latency."""
    d = proposal.decisions
    return Outcome(number, d, reward_of(d), proposal.log_probs, reward_of(d), latency_of(d))


def new(case: str, seed: int = 7, config: StrategyConfig = SMALL) -> Strategy:
    """The strategy of ``case``: a registered name, looking for a front with ``+front``."""
    name, front = case.removesuffix(FRONT), case.endswith(FRONT)
    return make_strategy(name, SPACE, seed, dataclasses.replace(config, front=front))


def base(case: str) -> str:
    return case.removesuffix(FRONT)


class Driver:
    """Runs a strategy like the controller: ``in_flight`` trials out, shuffled returns."""

    def __init__(self, strategy: Strategy, seed: int = 0, in_flight: int = 3) -> None:
        self.strategy = strategy
        self.rng = random.Random(seed)
        self.in_flight = in_flight
        self.outstanding: list[tuple[int, Proposal]] = []
        self.number = 0
        self.proposals: list[tuple[int, ...]] = []
        self.updates: list[bool] = []

    def step(self, failed: Callable[[int], bool] = lambda n: n % 5 == 3) -> None:
        """Fill up to ``in_flight`` proposals, then finish one at random."""
        while len(self.outstanding) < self.in_flight:
            proposal = self.strategy.propose()
            self.proposals.append(proposal.decisions)
            self.outstanding.append((self.number, proposal))
            self.number += 1
        number, proposal = self.outstanding.pop(self.rng.randrange(len(self.outstanding)))
        failure = Outcome(number, proposal.decisions, None, proposal.log_probs)
        outcome = failure if failed(number) else done(number, proposal)
        self.updates.append(self.strategy.observe(outcome))

    def run(self, steps: int) -> Driver:
        for _ in range(steps):
            self.step()
        return self


def test_registry_names_every_strategy() -> None:
    assert set(STRATEGIES) == {"random", "ppo", "evolution", "tpe"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"^strategy: unknown 'x' \(known: evolution, ppo, random, tpe\)$"
    ):
        make_strategy("x", SPACE, 0)


@pytest.mark.parametrize("name", CASES)
def test_default_config_works(name: str) -> None:
    proposal = new(name, seed=0, config=StrategyConfig()).propose()
    assert proposal.arch == SPACE.to_architecture(proposal.decisions)


@pytest.mark.parametrize("name", CASES)
def test_proposals_are_valid_points(name: str) -> None:
    driver = Driver(new(name)).run(30)
    strategy = new(name)
    for _ in range(10):
        proposal = strategy.propose()
        assert len(proposal.decisions) == len(SPACE.decisions)
        for value, decision in zip(proposal.decisions, SPACE.decisions, strict=True):
            assert isinstance(value, int)
            assert 0 <= value < decision.size
        assert proposal.arch == SPACE.to_architecture(proposal.decisions)
        assert len(proposal.log_probs) in (0, len(SPACE.decisions))
        assert all(p <= 0.0 for p in proposal.log_probs)
    for decisions in driver.proposals:
        SPACE.to_architecture(decisions)


@pytest.mark.parametrize("name", CASES)
def test_reproducible_from_the_seed(name: str) -> None:
    first = Driver(new(name, seed=3)).run(40)
    second = Driver(new(name, seed=3)).run(40)
    other = Driver(new(name, seed=4)).run(40)
    assert first.proposals == second.proposals
    assert first.updates == second.updates
    assert first.proposals != other.proposals


@pytest.mark.parametrize("name", CASES)
def test_restore_continues_exactly(name: str) -> None:
    original = Driver(new(name)).run(23)  # mid-batch: some outcomes wait for an update
    copy = new(name, seed=99)  # the state carries everything, the seed included
    copy.restore(original.strategy.state())
    assert copy.observed_numbers() == original.strategy.observed_numbers()
    assert copy.status() == original.strategy.status()
    clone = Driver(copy)
    clone.rng.setstate(original.rng.getstate())
    clone.outstanding = list(original.outstanding)
    clone.number = original.number
    original.proposals.clear()
    original.updates.clear()
    original.run(25)
    clone.run(25)
    assert clone.proposals == original.proposals
    assert clone.updates == original.updates
    probe = SPACE.reference_decisions()
    assert copy.log_prob(probe) == original.strategy.log_prob(probe)
    assert copy.status() == original.strategy.status()
    assert copy.state() == original.strategy.state()


@pytest.mark.parametrize("name", CASES)
def test_restore_rejects_a_state_of_another_kind(name: str) -> None:
    other = next(n for n in NAMES if n != base(name))
    with pytest.raises(ValueError, match="strategy state"):
        new(name).restore(new(other).state())


@pytest.mark.parametrize("name", CASES)
def test_out_of_order_and_duplicate_outcomes(name: str) -> None:
    strategy = new(name)
    proposals = [strategy.propose() for _ in range(12)]
    order = list(range(12))
    random.Random(1).shuffle(order)
    for n in order[:6]:
        p = proposals[n]
        strategy.observe(done(n, p))
    before = strategy.state()
    n = order[0]
    p = proposals[n]
    assert strategy.observe(Outcome(n, p.decisions, 0.123, p.log_probs)) is False
    assert strategy.observe(Outcome(n, p.decisions, None, p.log_probs)) is False
    assert strategy.state() == before
    assert strategy.observed_numbers() == frozenset(order[:6])
    for n in order[6:]:
        p = proposals[n]
        strategy.observe(done(n, p))
    assert strategy.observed_numbers() == frozenset(range(12))
    assert strategy.status().observed == 12


@pytest.mark.parametrize("name", CASES)
def test_failed_outcomes_are_counted(name: str) -> None:
    strategy = new(name)
    for n in range(10):
        p = strategy.propose()
        assert strategy.observe(Outcome(n, p.decisions, None, p.log_probs)) is False
    assert strategy.observed_numbers() == frozenset(range(10))
    assert strategy.status().observed == 10
    assert strategy.status().updates == 0
    # A failed trial may carry no decisions at all (it never got that far).
    assert strategy.observe(Outcome(10, (), None)) is False
    assert 10 in strategy.observed_numbers()
    strategy.propose()


@pytest.mark.parametrize("name", CASES)
def test_outcomes_outside_the_space_are_rejected(name: str) -> None:
    strategy = new(name)
    with pytest.raises(ValueError, match=r"outcome 0\.decisions: expected 42 decisions, got 3"):
        strategy.observe(Outcome(0, (0, 0, 0), 0.5))
    bad = (*SPACE.reference_decisions()[:-1], 7)
    with pytest.raises(ValueError, match=r"block6\.layers.*0\.\.2, got 7"):
        strategy.observe(Outcome(1, bad, 0.5))
    with pytest.raises(ValueError, match="reward: must be a finite number"):
        strategy.observe(Outcome(2, tuple(SPACE.reference_decisions()), float("nan")))
    assert strategy.observed_numbers() == frozenset()


@pytest.mark.parametrize("name", CASES)
def test_status_and_log_prob(name: str) -> None:
    driver = Driver(new(name)).run(30)
    status = driver.strategy.status()
    assert status.observed == 30
    probe = SPACE.reference_decisions()
    log_prob = driver.strategy.log_prob(probe)
    if base(name) == "ppo":
        assert status.updates == sum(driver.updates) > 0
        assert status.entropy is not None and status.entropy > 0
        assert log_prob is not None and log_prob < 0
    else:
        assert status.updates == 0
        assert status.entropy is None
        assert log_prob is None


@pytest.mark.parametrize("name", CASES)
def test_observe_reports_updates(name: str) -> None:
    driver = Driver(new(name)).run(30)
    if base(name) == "random":
        assert not any(driver.updates)
    else:
        assert any(driver.updates)


@pytest.mark.parametrize("name", CASES)
def test_leaves_global_random_state_alone(name: str) -> None:
    python_state = random.getstate()
    torch_state = torch.random.get_rng_state()
    Driver(new(name)).run(20)
    assert random.getstate() == python_state
    assert torch.equal(torch.random.get_rng_state(), torch_state)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PPOConfig(clip=2), "ppo.clip: must be in (0, 1), got 2"),
        (PPOConfig(clip=0.0), "ppo.clip: must be in (0, 1), got 0"),
        (PPOConfig(batch_size=0), "ppo.batch_size: must be an integer >= 1, got 0"),
        (PPOConfig(learning_rate=0), "ppo.learning_rate: must be in (0, inf), got 0"),
        (PPOConfig(learning_rate=float("nan")), "ppo.learning_rate: must be in (0, inf), got nan"),
        (PPOConfig(entropy_weight=-1e-3), "ppo.entropy_weight: must be in [0, inf), got -0.001"),
        (PPOConfig(baseline_decay=1.0), "ppo.baseline_decay: must be in [0, 1), got 1"),
        (PPOConfig(epochs=0), "ppo.epochs: must be an integer >= 1, got 0"),
        (PPOConfig(hidden_size=2.5), "ppo.hidden_size: must be an integer >= 1, got 2.5"),  # type: ignore[arg-type]
        (EvolutionConfig(population=1), "evolution.population: must be an integer >= 2, got 1"),
        (EvolutionConfig(sample_size=0), "evolution.sample_size: must be an integer >= 1, got 0"),
        (
            EvolutionConfig(population=4, sample_size=5),
            "evolution.sample_size: must be at most population (4), got 5",
        ),
        (TPEConfig(startup_trials=-1), "tpe.startup_trials: must be an integer >= 0, got -1"),
        (TPEConfig(candidates=0), "tpe.candidates: must be an integer >= 1, got 0"),
        (TPEConfig(local_fraction=1.0), "tpe.local_fraction: must be in [0, 1), got 1"),
        (TPEConfig(local_fraction=-0.1), "tpe.local_fraction: must be in [0, 1), got -0.1"),
    ],
)
def test_config_validation_names_the_field(
    config: PPOConfig | EvolutionConfig | TPEConfig, message: str
) -> None:
    with pytest.raises(ValueError) as err:
        config.validate()
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        config.validate("spec.x")
    assert str(err.value) == "spec.x" + message[message.index(".") :]


def test_defaults_validate() -> None:
    StrategyConfig().ppo.validate()
    StrategyConfig().evolution.validate()
    StrategyConfig().tpe.validate()
    assert StrategyConfig().ppo.batch_size == 20
    assert StrategyConfig().ppo.hidden_size == 100

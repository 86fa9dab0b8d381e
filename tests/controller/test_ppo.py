"""The LSTM policy and the PPO step."""

from __future__ import annotations

import io
import math
import random
import statistics
import threading
import time

import pytest
import torch

from mnas.space import SearchSpace
from services.controller.ppo import Policy, PPOStrategy, ppo_loss
from services.controller.strategy import Outcome, PPOConfig, StrategyConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = SearchSpace()
N = len(SPACE.decisions)


def ppo(seed: int = 0, **settings: float) -> PPOStrategy:
    config = StrategyConfig(ppo=PPOConfig(**settings))  # type: ignore[arg-type]
    return PPOStrategy(SPACE, seed, config)


def first_token_probability(strategy: PPOStrategy, choice: int) -> float:
    """P(decision 0 == choice): the first decision does not depend on the others."""
    decisions = list(SPACE.reference_decisions())
    decisions[0] = choice
    with torch.no_grad():
        log_probs, _ = strategy.policy(torch.tensor([decisions]))
    return math.exp(float(log_probs[0, 0]))


def test_proposed_log_probs_are_the_policy_s() -> None:
    strategy = ppo(hidden_size=32)
    for _ in range(5):
        proposal = strategy.propose()
        assert len(proposal.log_probs) == N
        with torch.no_grad():
            per_decision, _ = strategy.policy(torch.tensor([proposal.decisions]))
        assert per_decision[0].tolist() == pytest.approx(proposal.log_probs, abs=1e-5)
        total = strategy.log_prob(proposal.decisions)
        assert total == pytest.approx(sum(proposal.log_probs), abs=1e-4)


def test_initial_policy_is_near_uniform() -> None:
    strategy = ppo()
    uniform = sum(math.log(d.size) for d in SPACE.decisions) / N
    status = strategy.status()
    assert status.entropy is not None
    assert status.entropy == pytest.approx(uniform, rel=0.02)
    assert status.updates == 0


def test_a_rewarded_token_becomes_likely() -> None:
    strategy = ppo(seed=1, batch_size=10, hidden_size=32)
    before = first_token_probability(strategy, 2)
    assert before == pytest.approx(0.25, abs=0.05)
    number = 0
    for _ in range(12):
        proposals = [strategy.propose() for _ in range(10)]
        for p in reversed(proposals):  # out of order
            reward = 1.0 if p.decisions[0] == 2 else 0.0
            strategy.observe(Outcome(number, p.decisions, reward, p.log_probs))
            number += 1
    assert strategy.status().updates == 12
    assert first_token_probability(strategy, 2) > 0.8 > before


def test_an_update_after_every_batch_of_completed_outcomes() -> None:
    strategy = ppo(batch_size=3, hidden_size=16)
    proposals = [strategy.propose() for _ in range(8)]
    results = []
    for n, p in enumerate(proposals):
        reward = None if n in (1, 4) else 0.5 + 0.01 * n
        results.append(strategy.observe(Outcome(n, p.decisions, reward, p.log_probs)))
    # Completed: 0 2 3 | 5 6 7 ; failed 1 and 4 do not enter a batch.
    assert results == [False, False, False, True, False, False, False, True]
    assert strategy.status().updates == 2
    assert strategy.status().observed == 8


def test_baseline_is_a_moving_average_in_observed_order() -> None:
    strategy = ppo(baseline_decay=0.5, batch_size=100)
    p = strategy.propose()
    assert strategy.baseline is None
    strategy.observe(Outcome(5, p.decisions, 0.4, p.log_probs))
    assert strategy.baseline == pytest.approx(0.4)
    strategy.observe(Outcome(2, p.decisions, 0.8, p.log_probs))
    assert strategy.baseline == pytest.approx(0.6)
    strategy.observe(Outcome(9, p.decisions, None, p.log_probs))
    assert strategy.baseline == pytest.approx(0.6)
    strategy.observe(Outcome(1, p.decisions, 0.2, p.log_probs))
    assert strategy.baseline == pytest.approx(0.4)


def test_outcomes_without_log_probs_are_learned_from() -> None:
    strategy = ppo(batch_size=2, hidden_size=16)
    decisions = tuple(SPACE.reference_decisions())
    assert not strategy.observe(Outcome(0, decisions, 0.3))
    assert strategy.observe(Outcome(1, decisions, 0.9))
    assert strategy.status().updates == 1


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.5, 1.0, True),  # better already, beyond 1 + clip: no more push
        (1.1, 1.0, False),
        (0.5, 1.0, False),  # the unclipped side keeps pulling up
        (0.5, -1.0, True),  # worse already, beyond 1 - clip: no more push down
        (0.9, -1.0, False),
        (1.5, -1.0, False),
    ],
)
def test_clipped_ratio_stops_the_gradient(ratio: float, advantage: float, clipped: bool) -> None:
    log_probs = torch.zeros(1, 3, requires_grad=True)
    old = torch.full((1, 3), -math.log(ratio))
    loss = ppo_loss(log_probs, old, torch.tensor([advantage]), clip=0.2)
    loss.backward()  # type: ignore[no-untyped-call]
    assert log_probs.grad is not None
    if clipped:
        assert torch.all(log_probs.grad == 0)
    else:
        assert torch.all(log_probs.grad != 0)


def test_no_gradient_once_every_ratio_is_beyond_the_clip() -> None:
    """Through the whole policy: sequences already twice as likely as when sampled, with a
    positive advantage, leave every weight's gradient at zero."""
    policy = Policy([d.size for d in SPACE.decisions], 16, torch.Generator().manual_seed(0))
    decisions = torch.tensor([SPACE.sample_decisions(random.Random(i)) for i in range(4)])
    log_probs, entropy = policy(decisions)
    old = log_probs.detach() - math.log(2.0)
    loss = ppo_loss(log_probs, old, torch.ones(4), clip=0.2, entropy=entropy, entropy_weight=0.0)
    loss.backward()  # type: ignore[no-untyped-call]
    for name, parameter in policy.named_parameters():
        assert parameter.grad is None or torch.all(parameter.grad == 0), name
    policy.zero_grad()
    log_probs, _ = policy(decisions)
    loss = ppo_loss(log_probs, log_probs.detach(), torch.ones(4), clip=0.2)
    loss.backward()  # type: ignore[no-untyped-call]
    assert policy.head_weight.grad is not None and torch.any(policy.head_weight.grad != 0)


def test_restore_needs_the_same_hidden_size() -> None:
    with pytest.raises(ValueError, match="hidden_size 16, the config says 100"):
        ppo().restore(ppo(hidden_size=16).state())
    with pytest.raises(ValueError, match="not a PPO state"):
        ppo().restore(b"{}")


def test_propose_is_fast() -> None:
    strategy = ppo()
    for _ in range(10):
        strategy.propose()
    times = []
    for _ in range(100):
        started = time.perf_counter()
        strategy.propose()
        times.append(time.perf_counter() - started)
    assert statistics.median(times) < 0.005


def _outcomes(strategy: PPOStrategy, first: int, count: int) -> list[Outcome]:
    outcomes = []
    for number in range(first, first + count):
        proposal = strategy.propose()
        outcomes.append(Outcome(number, proposal.decisions, 0.1 * (number % 3), proposal.log_probs))
    return outcomes


def test_background_learning_gives_the_inline_update() -> None:
    """The learner thread applies the same update as an inline one, then calls back."""
    inline, background = ppo(seed=3, batch_size=4), ppo(seed=3, batch_size=4)
    outcomes = _outcomes(inline, 0, 4)
    assert _outcomes(background, 0, 4) == outcomes
    done = threading.Event()
    seen: list[int] = []

    def on_update() -> None:
        seen.append(background.status().updates)
        done.set()

    assert background.learn_in_background(on_update)
    try:
        assert [inline.observe(o) for o in outcomes] == [False, False, False, True]
        assert [background.observe(o) for o in outcomes] == [False] * 4  # queued instead
        assert done.wait(60)
        assert seen == [1]
        assert not background.learning()
        reference = SPACE.reference_decisions()
        assert background.log_prob(reference) == pytest.approx(inline.log_prob(reference))
    finally:
        background.close()


def test_a_checkpoint_keeps_batches_the_learner_has_not_applied() -> None:
    """state() taken while a batch waits holds it as outcomes not yet learned from; a
    restored strategy learns it first."""
    strategy = ppo(seed=4, batch_size=2)
    strategy.learn_in_background(lambda: None)
    with strategy._lock:  # the learner cannot start the update while we hold this
        for outcome in _outcomes(strategy, 0, 2):
            strategy.observe(outcome)
        assert strategy.learning()
        state = strategy.state()
    strategy.close()
    restored = ppo(seed=4, batch_size=2)
    restored.restore(state)
    assert restored.status().updates == 0
    updated = threading.Event()
    restored.learn_in_background(updated.set)
    try:
        assert updated.wait(60)
        assert restored.status().updates == 1
    finally:
        restored.close()


def test_a_state_of_the_first_format_is_restored() -> None:
    """Checkpoints written before the policy was kept as the learner's bytes (format 1:
    everything in one torch.save) still resume a search."""
    original = ppo(seed=5, batch_size=4)
    for outcome in _outcomes(original, 0, 4):
        original.observe(outcome)
    assert original.status().updates == 1
    old = io.BytesIO()
    torch.save(
        {
            **original._header(),
            "format": 1,
            "hidden_size": original.settings.hidden_size,
            "policy": original.policy.state_dict(),
            "optimizer": original.optimizer.state_dict(),
            "generator": original._generator.get_state(),
            "baseline": original.baseline,
            "updates": 1,
            "entropy": original.status().entropy,
            "pending": [],
        },
        old,
    )
    restored = ppo(seed=6, batch_size=4)
    restored.restore(old.getvalue())
    reference = SPACE.reference_decisions()
    assert restored.log_prob(reference) == original.log_prob(reference)
    assert restored.status() == original.status()
    assert [restored.propose() for _ in range(3)] == [original.propose() for _ in range(3)]
    again = ppo(seed=7, batch_size=4)
    again.restore(restored.state())  # and it is saved in the current format
    assert again.state() == restored.state()

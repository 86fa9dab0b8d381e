"""A PPO update of the policy: the clipped surrogate loss, ``epochs`` Adam steps on a
batch, and the same update as the learner process does it (weights in, weights out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from services.controller.ppo_policy import Policy
from services.controller.ppo_state import load_state, save_state

if TYPE_CHECKING:  # the registry imports the strategies: the learner process imports this first
    from services.controller.strategy import PPOConfig

__all__ = ["Sample", "apply_update", "ppo_loss", "run_epochs"]


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    entropy: torch.Tensor | None = None,
    entropy_weight: float = 0.0,
) -> torch.Tensor:
    """The negated PPO objective for per-decision ``log_probs`` ``(B, n)``, the log-probs
    they were sampled with, and one advantage per sequence ``(B,)``."""
    ratio = torch.exp(log_probs - old_log_probs)
    advantage = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage)
    loss = -surrogate.mean()
    if entropy is not None and entropy_weight:
        loss = loss - entropy_weight * entropy.mean()
    return loss


@dataclass(frozen=True)
class Sample:
    """A completed outcome waiting for the next update."""

    number: int
    decisions: tuple[int, ...]
    reward: float
    advantage: float
    log_probs: tuple[float, ...]


def run_epochs(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    settings: PPOConfig,
    batch: Sequence[Sample],
) -> float:
    """``settings.epochs`` Adam steps of PPO on ``batch``; the mean per-decision entropy
    over the batch as the last epoch saw it."""
    decisions = torch.tensor([s.decisions for s in batch], dtype=torch.long)
    advantages = torch.tensor([s.advantage for s in batch], dtype=torch.float32)
    old = _old_log_probs(policy, batch, decisions)
    entropy = torch.zeros(())
    for _ in range(settings.epochs):
        log_probs, entropy = policy(decisions)
        loss = ppo_loss(log_probs, old, advantages, settings.clip, entropy, settings.entropy_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return float(entropy.detach().mean())


def _old_log_probs(
    policy: Policy, batch: Sequence[Sample], decisions: torch.Tensor
) -> torch.Tensor:
    """The log-probs each sequence was proposed with, ``(B, n)``. An outcome without
    them (proposed by another strategy) takes the current policy's."""
    if all(s.log_probs for s in batch):
        return torch.tensor([s.log_probs for s in batch], dtype=torch.float32)
    with torch.no_grad():
        current, _ = policy(decisions)
    rows = [
        torch.tensor(s.log_probs, dtype=torch.float32) if s.log_probs else current[i]
        for i, s in enumerate(batch)
    ]
    return torch.stack(rows)


# The learner process's modules by shape: every request brings its own weights.
_MODULES: dict[tuple[tuple[int, ...], int], tuple[Policy, torch.optim.Optimizer]] = {}


def apply_update(
    sizes: tuple[int, ...],
    settings: PPOConfig,
    state: bytes,
    batch: Sequence[tuple[Sequence[int], float, Sequence[float]]],
) -> tuple[bytes, float]:
    """What the learner process does with a request: the update of the policy and
    optimizer in ``state`` (:func:`save_state`) on ``batch``, as the strategy's own update
    would do it; the new state and the entropy of :func:`run_epochs`."""
    key = (tuple(sizes), settings.hidden_size)
    if key not in _MODULES:
        policy = Policy(sizes, settings.hidden_size, torch.Generator().manual_seed(0))
        _MODULES[key] = (policy, torch.optim.Adam(policy.parameters()))
    policy, optimizer = _MODULES[key]
    load_state(state, policy, optimizer)
    for group in optimizer.param_groups:  # the state holds moments, not hyper-parameters
        group["lr"] = settings.learning_rate
    samples = [
        Sample(number=0, decisions=tuple(d), reward=0.0, advantage=float(a), log_probs=tuple(p))
        for d, a, p in batch
    ]
    entropy = run_epochs(policy, optimizer, settings, samples)
    return save_state(policy, optimizer), entropy

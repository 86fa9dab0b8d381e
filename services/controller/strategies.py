"""Search strategies: propose architectures, learn from finished trials.

A strategy never writes the store; the controller records what it proposes and tells it
what came back. Random search is the reference implementation of the interface.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass

from mnas.arch import Architecture
from mnas.space import SearchSpace

__all__ = ["STRATEGIES", "Proposal", "RandomStrategy", "Strategy", "make_strategy"]


@dataclass(frozen=True)
class Proposal:
    """An architecture and the decisions that produced it."""

    decisions: tuple[int, ...]
    arch: Architecture


@dataclass(frozen=True)
class Outcome:
    """What a finished trial reports back: its reward, or None when it failed."""

    number: int
    decisions: tuple[int, ...]
    reward: float | None


class Strategy(abc.ABC):
    """Proposes architectures from a space and learns from the outcomes, in any order."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed

    @abc.abstractmethod
    def propose(self) -> Proposal:
        """The next architecture to try."""

    def observe(self, outcome: Outcome) -> None:  # noqa: B027 - optional hook
        """Learn from a finished trial (rewards arrive in any order)."""


class RandomStrategy(Strategy):
    """Uniform sampling of the space, reproducible from the seed."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        super().__init__(space, seed)
        self._rng = random.Random(seed)

    def propose(self) -> Proposal:
        decisions = tuple(self.space.sample_decisions(self._rng))
        return Proposal(decisions=decisions, arch=self.space.to_architecture(decisions))


STRATEGIES: dict[str, type[Strategy]] = {"random": RandomStrategy}


def make_strategy(name: str, space: SearchSpace, seed: int) -> Strategy:
    try:
        return STRATEGIES[name](space, seed)
    except KeyError:
        raise ValueError(
            f"strategy: unknown {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        ) from None

"""Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image
Classifier Architecture Search", Algorithm 1), asynchronous.

The population is the ``population`` most recently completed trials, in the order they
completed; each new completion pushes the oldest member out, whatever its reward. Until the
population is full, proposals are uniform samples of the space. After that, a proposal
draws ``sample_size`` members uniformly (with replacement, as the paper's algorithm),
takes the one with the highest reward (the first drawn on a tie) and changes exactly one
of its decisions, chosen uniformly among those with more than one choice, to a different
choice. Proposals use the population as it stands, whatever is still in flight; failed
trials are counted but never join it.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from mnas.space import SearchSpace
from services.controller.strategy import (
    Outcome,
    Proposal,
    Strategy,
    StrategyConfig,
    load_json_state,
    rng_state,
    set_rng_state,
)

__all__ = ["EvolutionStrategy", "Member", "mutate"]


@dataclass(frozen=True)
class Member:
    """A completed trial in the population."""

    number: int
    decisions: tuple[int, ...]
    reward: float


def mutate(decisions: Sequence[int], sizes: Sequence[int], rng: random.Random) -> list[int]:
    """``decisions`` with exactly one changed to a different choice (unchanged when no
    decision has a second choice)."""
    child = list(decisions)
    mutable = [i for i, size in enumerate(sizes) if size > 1]
    if not mutable:
        return child
    i = rng.choice(mutable)
    other = rng.randrange(sizes[i] - 1)
    child[i] = other if other < child[i] else other + 1
    return child


class EvolutionStrategy(Strategy):
    """Aging evolution with tournament selection and single-decision mutation."""

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int, config: StrategyConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self.settings = self.config.evolution
        self.settings.validate()
        self._rng = random.Random(seed)
        self._population: deque[Member] = deque(maxlen=self.settings.population)

    @property
    def population(self) -> tuple[Member, ...]:
        """The living members, oldest first."""
        return tuple(self._population)

    def propose(self) -> Proposal:
        if len(self._population) < self.settings.population:
            return self._proposal(self.space.sample_decisions(self._rng))
        members = self._population
        sample = [members[self._rng.randrange(len(members))] for _ in range(self.sample_size)]
        parent = max(sample, key=lambda m: m.reward)
        return self._proposal(mutate(parent.decisions, self._sizes, self._rng))

    @property
    def sample_size(self) -> int:
        return self.settings.sample_size

    def _learn(self, outcome: Outcome) -> bool:
        if outcome.reward is None:
            return False
        self._population.append(
            Member(number=outcome.number, decisions=outcome.decisions, reward=outcome.reward)
        )
        return True

    def state(self) -> bytes:
        payload = {
            **self._header(),
            "rng": rng_state(self._rng),
            "population": [[m.number, list(m.decisions), m.reward] for m in self._population],
        }
        return json.dumps(payload).encode()

    def restore(self, data: bytes) -> None:
        payload = load_json_state(data)
        self._check_header(payload)
        set_rng_state(self._rng, payload["rng"])
        self._population.clear()
        for number, decisions, reward in payload["population"]:
            self._population.append(
                Member(number=int(number), decisions=tuple(decisions), reward=float(reward))
            )

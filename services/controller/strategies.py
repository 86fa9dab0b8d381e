"""The search strategies by name: random search and the strategies of their own modules
(PPO, regularized evolution, TPE), each implementing :class:`~services.controller.strategy.
Strategy`. This module imports them; they import only the interface, so nothing imports
back."""

from __future__ import annotations

from mnas.space import SearchSpace
from services.controller.evolution import EvolutionStrategy
from services.controller.ppo import PPOStrategy
from services.controller.strategy import RandomStrategy, Strategy, StrategyConfig
from services.controller.tpe import TPEStrategy

__all__ = ["STRATEGIES", "make_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RandomStrategy, EvolutionStrategy, PPOStrategy, TPEStrategy)
}


def make_strategy(
    name: str, space: SearchSpace, seed: int, config: StrategyConfig | None = None
) -> Strategy:
    """A new strategy by name; ``ValueError`` naming the known ones otherwise."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"strategy: unknown {name!r} (known: {', '.join(sorted(STRATEGIES))})"
        ) from None
    return cls(space, seed, config)

"""Reward functions: accuracy and latency folded into one number (pure math).

MnasNet (Tan et al. 2019, section 3): ``ACC * (LAT / T) ** w`` with ``w = alpha`` when
``LAT <= T`` and ``w = beta`` otherwise. Soft constraint: ``alpha = beta = -0.07``
(doubling latency costs about 5% relative accuracy); hard constraint: ``alpha = 0``,
``beta = -1``. TuNAS (Bender et al. 2020): ``ACC + beta * |LAT / T - 1|``, ``beta = -0.1``.
``pareto`` has no target: the search looks for the front of accuracy against latency, and
a trial's reward is its accuracy (the strategy weighs latency itself).

Bad input raises :class:`~mnas.errors.InvalidInput` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from mnas.errors import InvalidInput

__all__ = ["Kind", "Objective", "reward"]


class Kind(enum.Enum):
    SOFT = "soft"
    HARD = "hard"
    ABSOLUTE = "absolute"
    PARETO = "pareto"


_DEFAULTS: dict[Kind, tuple[float, float]] = {
    Kind.SOFT: (-0.07, -0.07),
    Kind.HARD: (0.0, -1.0),
    Kind.ABSOLUTE: (0.0, -0.1),  # alpha unused
    Kind.PARETO: (0.0, 0.0),  # unused
}


@dataclass(frozen=True)
class Objective:
    """A target latency and how missing or beating it weighs against accuracy; for
    ``pareto``, no target (``target_seconds`` 0) and no exponents."""

    kind: Kind
    target_seconds: float
    alpha: float
    beta: float

    @classmethod
    def of(
        cls,
        kind: Kind,
        target_seconds: float,
        *,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> Objective:
        """The objective with the paper's exponents where ``alpha``/``beta`` are None."""
        default_alpha, default_beta = _DEFAULTS[kind]
        return cls(
            kind=kind,
            target_seconds=target_seconds,
            alpha=default_alpha if alpha is None else alpha,
            beta=default_beta if beta is None else beta,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise InvalidInput(
                f"kind: expected one of {[k.value for k in Kind]}, got {self.kind!r}"
            )
        if self.kind is Kind.PARETO:
            for name in ("target_seconds", "alpha", "beta"):
                if getattr(self, name) != 0:
                    field = "target_latency_seconds" if name == "target_seconds" else name
                    raise InvalidInput(
                        f"{field}: not used by a pareto objective, which looks for the whole "
                        "accuracy-latency front; leave it out"
                    )
            return
        if not _finite(self.target_seconds) or self.target_seconds <= 0:
            raise InvalidInput(
                f"target_latency_seconds: must be a positive number, got {self.target_seconds!r}"
            )
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not _finite(value):
                raise InvalidInput(f"{name}: must be a finite number, got {value!r}")
            if value > 0:
                raise InvalidInput(
                    f"{name}: must be <= 0 (a positive exponent rewards slower models), got {value}"
                )


def reward(accuracy: float, latency_seconds: float, objective: Objective) -> float:
    """The reward of a model with ``accuracy`` (0..1) and ``latency_seconds`` (> 0)."""
    if not _finite(accuracy) or not 0.0 <= accuracy <= 1.0:
        raise InvalidInput(f"accuracy: must be in [0, 1], got {accuracy!r}")
    if not _finite(latency_seconds) or latency_seconds <= 0:
        raise InvalidInput(f"latency_seconds: must be a positive number, got {latency_seconds!r}")
    if objective.kind is Kind.PARETO:
        return float(accuracy)
    ratio = latency_seconds / objective.target_seconds
    if objective.kind is Kind.ABSOLUTE:
        return accuracy + objective.beta * abs(ratio - 1.0)
    w = objective.alpha if latency_seconds <= objective.target_seconds else objective.beta
    return float(accuracy * ratio**w)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""Reward math, table-driven, with the boundary LAT == T and invalid inputs."""

from __future__ import annotations

import math

import pytest

from mnas.pareto import pareto_front
from services.reward.rewards import Kind, Objective, reward

SOFT = Objective.of(Kind.SOFT, 0.075)
HARD = Objective.of(Kind.HARD, 0.075)
ABS = Objective.of(Kind.ABSOLUTE, 0.075)
PARETO = Objective.of(Kind.PARETO, 0.0)


@pytest.mark.parametrize(
    ("accuracy", "latency", "objective", "expected"),
    [
        # soft: w = -0.07 on both sides of T
        (0.75, 0.075, SOFT, 0.75),  # LAT == T: exactly ACC
        (0.75, 0.150, SOFT, 0.75 * 2**-0.07),  # twice as slow: about 5% less
        (0.75, 0.0375, SOFT, 0.75 * 0.5**-0.07),  # twice as fast: about 5% more
        # hard: w = 0 below or at T, -1 above
        (0.75, 0.075, HARD, 0.75),  # LAT == T uses alpha = 0
        (0.75, 0.050, HARD, 0.75),
        (0.75, 0.150, HARD, 0.375),
        # absolute (TuNAS): ACC - 0.1 |LAT/T - 1|
        (0.75, 0.075, ABS, 0.75),
        (0.75, 0.150, ABS, 0.65),
        # pareto: no target; the reward is the accuracy, the strategy weighs latency
        (0.75, 0.150, PARETO, 0.75),
        (0.75, 10.0, PARETO, 0.75),
        (0.75, 0.0375, ABS, 0.70),
        # custom exponents
        (0.5, 0.2, Objective.of(Kind.SOFT, 0.1, alpha=-0.1, beta=-0.5), 0.5 * 2**-0.5),
        (0.5, 0.05, Objective.of(Kind.SOFT, 0.1, alpha=-0.1, beta=-0.5), 0.5 * 0.5**-0.1),
        (0.0, 0.2, SOFT, 0.0),
        (1.0, 0.075, SOFT, 1.0),
    ],
)
def test_reward(accuracy: float, latency: float, objective: Objective, expected: float) -> None:
    assert math.isclose(reward(accuracy, latency, objective), expected, rel_tol=1e-12)


def test_soft_constraint_doubling_latency_costs_about_five_percent() -> None:
    ratio = reward(0.8, 0.15, SOFT) / reward(0.8, 0.075, SOFT)
    assert 0.95 < ratio < 0.955


@pytest.mark.parametrize(
    ("accuracy", "latency", "needle"),
    [
        (-0.1, 0.1, "accuracy"),
        (1.01, 0.1, "accuracy"),
        (float("nan"), 0.1, "accuracy"),
        (0.5, 0.0, "latency_seconds"),
        (0.5, -1.0, "latency_seconds"),
        (0.5, float("inf"), "latency_seconds"),
    ],
)
def test_invalid_measurements_raise(accuracy: float, latency: float, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        reward(accuracy, latency, SOFT)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": Kind.SOFT, "target_seconds": 0.0}, "target_latency_seconds"),
        ({"kind": Kind.SOFT, "target_seconds": -1.0}, "target_latency_seconds"),
        ({"kind": Kind.SOFT, "target_seconds": 0.1, "alpha": 0.5}, "alpha"),
        ({"kind": Kind.HARD, "target_seconds": 0.1, "beta": 1.0}, "beta"),
        ({"kind": Kind.SOFT, "target_seconds": 0.1, "beta": float("nan")}, "beta"),
    ],
)
def test_invalid_objectives_raise(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Objective.of(**kwargs)  # type: ignore[arg-type]


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [
        (0.70, 0.010),
        (0.80, 0.020),
        (0.75, 0.030),
        (0.80, 0.025),
        (0.90, 0.050),
        (0.60, 0.010),
        (0.90, 0.060),
    ]
    front = pareto_front(points, accuracy=lambda p: p[0], latency=lambda p: p[1])
    assert front == [(0.70, 0.010), (0.80, 0.020), (0.90, 0.050)]
    assert pareto_front([], accuracy=lambda p: p, latency=lambda p: p) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_seconds": 0.075}, "target_latency_seconds"),
        ({"target_seconds": 0.0, "alpha": -0.07}, "alpha"),
        ({"target_seconds": 0.0, "beta": -1.0}, "beta"),
    ],
)
def test_a_pareto_objective_takes_no_target_and_no_exponents(
    kwargs: dict[str, float], field: str
) -> None:
    target = kwargs.pop("target_seconds")
    with pytest.raises(ValueError, match=f"^{field}: not used by a pareto objective"):
        Objective.of(Kind.PARETO, target, **kwargs)

"""How a search's objective reads, in one place for the CLI, the report and ``validate``."""

from __future__ import annotations

from mnas.v1 import common_pb2

__all__ = ["FRONT_TEXT", "describe", "looks_for_front", "target_ms"]

FRONT_TEXT = "pareto: the front of accuracy against latency, no target"


def looks_for_front(objective: common_pb2.Objective) -> bool:
    """Whether the search looks for the accuracy-latency front (kind pareto) rather than
    the best reward at a target latency."""
    return objective.kind == common_pb2.OBJECTIVE_KIND_PARETO


def describe(objective: common_pb2.Objective) -> str:
    """``soft, T = 75 ms (alpha = -0.07, beta = -0.07)``, or the pareto sentence."""
    if looks_for_front(objective):
        return FRONT_TEXT
    kind = common_pb2.ObjectiveKind.Name(objective.kind).removeprefix("OBJECTIVE_KIND_").lower()
    text = f"{'soft' if kind == 'unspecified' else kind}, T = {target_ms(objective)} ms"
    weights = [
        f"{name} = {getattr(objective, name):g}"
        for name in ("alpha", "beta")
        if objective.HasField(name)
    ]
    return text + (f" ({', '.join(weights)})" if weights else "")


def target_ms(objective: common_pb2.Objective) -> str:
    return f"{objective.target_latency_seconds * 1e3:g}"

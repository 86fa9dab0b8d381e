"""The reward service's proto <-> domain conversions (no gRPC): what the controller's spec
resolver and the servicer both read an ``Objective`` message with."""

from __future__ import annotations

from mnas.errors import InvalidInput
from mnas.v1 import common_pb2
from services.reward.rewards import Kind, Objective

__all__ = ["objective_from_proto"]

_KINDS = {
    common_pb2.OBJECTIVE_KIND_SOFT: Kind.SOFT,
    common_pb2.OBJECTIVE_KIND_HARD: Kind.HARD,
    common_pb2.OBJECTIVE_KIND_ABSOLUTE: Kind.ABSOLUTE,
    common_pb2.OBJECTIVE_KIND_PARETO: Kind.PARETO,
}


def objective_from_proto(message: common_pb2.Objective, path: str = "objective") -> Objective:
    """The domain objective; :class:`~mnas.errors.InvalidInput` names the field under
    ``path``."""
    kind = _KINDS.get(message.kind)
    if kind is None:
        raise InvalidInput(
            f"{path}.kind: must be OBJECTIVE_KIND_SOFT, _HARD, _ABSOLUTE or _PARETO, got "
            f"{message.kind}"
        )
    try:
        return Objective.of(
            kind,
            message.target_latency_seconds,
            alpha=message.alpha if message.HasField("alpha") else None,
            beta=message.beta if message.HasField("beta") else None,
        )
    except ValueError as err:
        raise InvalidInput(f"{path}.{err}") from None

"""Test helper: small random architectures that together exercise every layer kind."""

from __future__ import annotations

import random

from mnas.arch import Activation, Architecture, BlockSpec, Op, Skip
from mnas.layers import NetworkPlan, Shortcut

__all__ = ["ALL_FEATURES", "coverage", "random_architecture", "random_architectures"]

_FILTERS = (8, 16, 24, 32)


def random_architecture(rng: random.Random, activation: Activation) -> Architecture:
    """2-4 blocks of random op, kernel, stride, SE and skip; sometimes a declared input
    filter count that differs from what arrives (as in mnasnet-small)."""
    stem = rng.choice(_FILTERS)
    arriving = stem
    blocks = []
    for _ in range(rng.randint(2, 4)):
        op = rng.choice(list(Op))
        out = rng.choice(_FILTERS)
        blocks.append(
            BlockSpec(
                op=op,
                repeats=rng.randint(1, 3),
                kernel=rng.choice((3, 5)),
                stride=rng.choice((1, 2)),
                expansion=rng.choice((3, 6)) if op is Op.MBCONV else 1,
                input_filters=arriving if rng.random() < 0.85 else rng.choice(_FILTERS),
                output_filters=out,
                se_ratio=rng.choice((0.0, 0.25)),
                skip=rng.choice(list(Skip)),
            )
        )
        arriving = out
    return Architecture(
        blocks=tuple(blocks),
        stem_filters=stem,
        head_filters=rng.choice((32, 64)),
        activation=activation,
        dropout=rng.choice((0.0, 0.2)),
    )


def random_architectures(count: int, seed: int) -> list[Architecture]:
    """``count`` random architectures taking the activations in turn (so that a new
    activation is covered, and changes none of the random draws)."""
    rng = random.Random(seed)
    activations = list(Activation)
    return [random_architecture(rng, activations[i % len(activations)]) for i in range(count)]


def coverage(plans: list[NetworkPlan]) -> set[str]:
    """The layer features the plans exercise, as short labels."""
    seen: set[str] = set()
    for net in plans:
        seen.add(f"act:{net.activation.value}")
        for layer in net.layers:
            seen |= {f"op:{layer.op.value}", f"k:{layer.kernel}", f"stride:{layer.stride}"}
            seen.add("se" if layer.se_channels else "no-se")
            seen.add(f"shortcut:{layer.shortcut.value}")
            if layer.shortcut is Shortcut.POOL:
                seen.add(
                    "pool:"
                    + ("pools" if layer.shortcut_pools else "no-pool")
                    + ("+projects" if layer.shortcut_projects else "")
                )
            if layer.in_size % 2 and layer.stride == 2:
                seen.add("stride 2 on odd size")
    return seen


ALL_FEATURES = frozenset(
    {
        *(f"act:{a.value}" for a in Activation),
        "op:conv",
        "op:dconv",
        "op:mbconv",
        "k:3",
        "k:5",
        "stride:1",
        "stride:2",
        "se",
        "no-se",
        "shortcut:none",
        "shortcut:identity",
        "shortcut:pool",
        "pool:pools",
        "pool:pools+projects",
        "pool:no-pool+projects",
    }
)

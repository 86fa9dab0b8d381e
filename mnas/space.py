"""The factorized hierarchical search space of MnasNet (Tan et al. 2019, section 4.1).

The network is a sequence of blocks, one per reference stage (MobileNetV2's by default).
Each block makes one choice from each sub-space, and all its layers share it: the
convolution op, kernel, SE ratio, skip op, output filters relative to the reference and
number of layers relative to the reference. Only a block's first layer strides.

A point of the space is a flat sequence of categorical decisions, six per block in that
order; each decision has its own vocabulary. This is what an RNN controller emits one token
at a time. :meth:`SearchSpace.to_architecture` and :meth:`SearchSpace.to_decisions` map
between decisions and architectures.

Two choices can land on the same network: filters are rounded to a multiple of 8 (so for a
16-filter stage, 0.75x and 1.0x both give 16) and a block keeps at least one layer (so -1
on a one-layer stage is 0). The size counts choices, as the paper does;
:attr:`SearchSpace.distinct_size` counts each block's distinct filter and layer counts
once; ``to_decisions`` returns the choice nearest the reference among those that match.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mnas.arch import Activation, Architecture, BlockSpec, Op, Skip
from mnas.defaults import DEFAULT_NUM_CLASSES, DEFAULT_RESOLUTION, DEFAULT_WIDTH

__all__ = [
    "MOBILENETV2_STAGES",
    "PRESETS",
    "SMALL_IMAGE_STAGES",
    "Decision",
    "SearchSpace",
    "SpacePreset",
    "Stage",
    "make_divisible",
    "preset",
]

DECISIONS_PER_BLOCK = ("op", "kernel", "se", "skip", "filters", "layers")


@dataclass(frozen=True)
class Stage:
    """A reference stage: expansion t, output filters c, layers n, first stride s."""

    expansion: int
    filters: int
    layers: int
    stride: int


MOBILENETV2_STAGES: tuple[Stage, ...] = (
    Stage(1, 16, 1, 1),
    Stage(6, 24, 2, 2),
    Stage(6, 32, 3, 2),
    Stage(6, 64, 4, 2),
    Stage(6, 96, 3, 1),
    Stage(6, 160, 3, 2),
    Stage(6, 320, 1, 1),
)


# For 28-32 pixel inputs (Fashion-MNIST, CIFAR): after the stride-2 stem, five stages with
# strides 1, 1, 2, 2, 1 (total stride 8 instead of 32), so a 28x28 image keeps 14x14, 7x7 and
# 4x4 feature maps through the blocks instead of collapsing to 1x1 by the fifth. This is how
# CIFAR adaptations of MobileNetV2 keep spatial structure: fewer stride-2 stages.
SMALL_IMAGE_STAGES: tuple[Stage, ...] = (
    Stage(1, 16, 1, 1),
    Stage(6, 24, 2, 1),
    Stage(6, 40, 2, 2),
    Stage(6, 80, 3, 2),
    Stage(6, 96, 2, 1),
)


@dataclass(frozen=True)
class SpacePreset:
    """A named stage schedule and the input resolution it is meant for."""

    name: str
    stages: tuple[Stage, ...]
    resolution: int
    description: str


PRESETS: dict[str, SpacePreset] = {
    p.name: p
    for p in (
        SpacePreset(
            "mnasnet",
            MOBILENETV2_STAGES,
            224,
            "the paper's ImageNet space: MobileNetV2's seven stages, total stride 32",
        ),
        SpacePreset(
            "small-images",
            SMALL_IMAGE_STAGES,
            28,
            "five stages with total stride 8, for 28-32 pixel inputs (Fashion-MNIST, CIFAR)",
        ),
    )
}


def preset(name: str) -> SpacePreset:
    """The preset called ``name``; ValueError naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise ValueError(f"space.preset: unknown preset {name!r} (known: {known})") from None


@dataclass(frozen=True)
class Decision:
    """One categorical decision: a name such as ``block3.kernel`` and its vocabulary."""

    name: str
    choices: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.choices)


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` to the nearest multiple of ``divisor`` (halves up), at least ``divisor``."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


@dataclass(frozen=True)
class SearchSpace:
    """A configurable factorized hierarchical space; the defaults are the paper's."""

    stages: tuple[Stage, ...] = MOBILENETV2_STAGES
    ops: tuple[str, ...] = ("conv", "dconv", "mbconv3", "mbconv6")
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[str, ...] = ("pool", "identity", "none")
    filter_ratios: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_deltas: tuple[int, ...] = (-1, 0, 1)
    stem_filters: int = 32
    head_filters: int = 1280
    activation: Activation = Activation.RELU
    dropout: float = 0.2
    filter_divisor: int = 8
    resolution: int = DEFAULT_RESOLUTION
    num_classes: int = DEFAULT_NUM_CLASSES
    width: float = DEFAULT_WIDTH
    _decisions: tuple[Decision, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "stages",
            "ops",
            "kernels",
            "se_ratios",
            "skips",
            "filter_ratios",
            "layer_deltas",
        ):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if not value:
                raise ValueError(f"space.{name}: must not be empty")
            if len(set(value)) != len(value):
                raise ValueError(f"space.{name}: choices repeat: {list(value)}")
        for i, stage in enumerate(self.stages):
            for attr, low in (("expansion", 1), ("filters", 1), ("layers", 1), ("stride", 1)):
                value = getattr(stage, attr)
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(
                        f"space.stages[{i}].{attr}: must be an integer >= {low}, got {value!r}"
                    )
        for op in self.ops:
            _parse_op(op, "space.ops")
        for k in self.kernels:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"space.kernels: {k!r} is not an odd positive integer")
        for se in self.se_ratios:
            if not 0.0 <= se <= 1.0:
                raise ValueError(f"space.se_ratios: {se!r} is not in [0, 1]")
        for skip in self.skips:
            if skip not in {s.value for s in Skip}:
                known = ", ".join(s.value for s in Skip)
                raise ValueError(f"space.skips: unknown skip {skip!r} (known: {known})")
        for ratio in self.filter_ratios:
            if not ratio > 0:
                raise ValueError(f"space.filter_ratios: {ratio!r} is not positive")
        for name in ("resolution", "num_classes", "stem_filters", "head_filters", "filter_divisor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"space.{name}: must be a positive integer, got {value!r}")
        if not self.width > 0:
            raise ValueError(f"space.width: must be positive, got {self.width!r}")
        decisions = []
        for b in range(len(self.stages)):
            vocabularies = (
                self.ops,
                tuple(str(k) for k in self.kernels),
                tuple(_fmt(s) for s in self.se_ratios),
                self.skips,
                tuple(_fmt(r) for r in self.filter_ratios),
                tuple(f"{d:+d}" for d in self.layer_deltas),
            )
            for kind, vocab in zip(DECISIONS_PER_BLOCK, vocabularies, strict=True):
                decisions.append(Decision(f"block{b}.{kind}", vocab))
        object.__setattr__(self, "_decisions", tuple(decisions))
        # Every choice must give a valid block (e.g. a reference op must exist).
        self.reference_decisions()

    # -- shape of the space ------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return len(self.stages)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The flat decision sequence, six per block."""
        return self._decisions

    @property
    def choices_per_block(self) -> int:
        return math.prod(d.size for d in self._decisions[: len(DECISIONS_PER_BLOCK)])

    @property
    def size(self) -> int:
        """Number of points (choice combinations) in the space, exactly."""
        return math.prod(d.size for d in self._decisions)

    @property
    def log10_size(self) -> float:
        return sum(math.log10(d.size) for d in self._decisions)

    @property
    def distinct_size(self) -> int:
        """Points of the space with choices that two filter ratios or two layer deltas
        land on alike counted once (a 16-filter stage's 0.75x and 1.0x are both 16)."""
        return math.prod(self._distinct_per_block())

    @property
    def log10_distinct_size(self) -> float:
        return sum(math.log10(n) for n in self._distinct_per_block())

    def _distinct_per_block(self) -> list[int]:
        per = len(DECISIONS_PER_BLOCK)
        counts = []
        for b, stage in enumerate(self.stages):
            sizes = [d.size for d in self._decisions[b * per : (b + 1) * per]]
            filters = {
                make_divisible(stage.filters * r, self.filter_divisor) for r in self.filter_ratios
            }
            layers = {max(1, stage.layers + d) for d in self.layer_deltas}
            counts.append(math.prod(sizes[:4]) * len(filters) * len(layers))
        return counts

    # -- mapping ---------------------------------------------------------------------

    def to_architecture(self, decisions: Sequence[int]) -> Architecture:
        """The architecture that a full decision sequence (choice indices) describes."""
        if len(decisions) != len(self._decisions):
            raise ValueError(
                f"decisions: expected {len(self._decisions)} choices, got {len(decisions)}"
            )
        for value, decision in zip(decisions, self._decisions, strict=True):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"decisions.{decision.name}: expected an index, got {value!r}")
            if not 0 <= value < decision.size:
                raise ValueError(
                    f"decisions.{decision.name}: index {value} out of range 0..{decision.size - 1}"
                )
        blocks = []
        arriving = self.stem_filters
        per = len(DECISIONS_PER_BLOCK)
        for b, stage in enumerate(self.stages):
            op_i, k_i, se_i, skip_i, f_i, l_i = decisions[b * per : (b + 1) * per]
            op, expansion = _parse_op(self.ops[op_i], "space.ops")
            out = make_divisible(stage.filters * self.filter_ratios[f_i], self.filter_divisor)
            blocks.append(
                BlockSpec(
                    op=op,
                    repeats=max(1, stage.layers + self.layer_deltas[l_i]),
                    kernel=self.kernels[k_i],
                    stride=stage.stride,
                    expansion=expansion,
                    input_filters=arriving,
                    output_filters=out,
                    se_ratio=float(self.se_ratios[se_i]),
                    skip=Skip(self.skips[skip_i]),
                )
            )
            arriving = out
        return Architecture(
            blocks=tuple(blocks),
            stem_filters=self.stem_filters,
            head_filters=self.head_filters,
            activation=self.activation,
            dropout=self.dropout,
        )

    def to_decisions(self, arch: Architecture) -> list[int]:
        """Choice indices for ``arch``; ``ValueError`` names the field outside the space."""
        if len(arch.blocks) != self.num_blocks:
            raise ValueError(
                f"blocks: the space has {self.num_blocks} blocks, the architecture "
                f"{len(arch.blocks)}"
            )
        for name, mine, theirs in (
            ("stem_filters", self.stem_filters, arch.stem_filters),
            ("head_filters", self.head_filters, arch.head_filters),
            ("activation", self.activation, arch.activation),
            ("dropout", self.dropout, arch.dropout),
        ):
            if mine != theirs:
                raise ValueError(f"{name}: the space has {mine!r}, the architecture {theirs!r}")
        indices: list[int] = []
        arriving = self.stem_filters
        for b, (stage, block) in enumerate(zip(self.stages, arch.blocks, strict=True)):
            where = f"blocks[{b}]"
            if block.stride != stage.stride:
                raise ValueError(
                    f"{where}.stride: the space has {stage.stride}, got {block.stride}"
                )
            if block.input_filters != arriving:
                raise ValueError(
                    f"{where}.input_filters: the previous block gives {arriving}, "
                    f"got {block.input_filters}"
                )
            op_name = _op_name(block)
            indices.append(_index(f"{where}.op", self.ops, op_name))
            indices.append(_index(f"{where}.kernel", self.kernels, block.kernel))
            indices.append(_index(f"{where}.se_ratio", self.se_ratios, block.se_ratio))
            indices.append(_index(f"{where}.skip", self.skips, block.skip.value))
            indices.append(
                _nearest(
                    f"{where}.output_filters",
                    [stage.filters * r for r in self.filter_ratios],
                    [
                        make_divisible(stage.filters * r, self.filter_divisor)
                        for r in self.filter_ratios
                    ],
                    block.output_filters,
                )
            )
            indices.append(
                _nearest(
                    f"{where}.repeats",
                    [stage.layers + d for d in self.layer_deltas],
                    [max(1, stage.layers + d) for d in self.layer_deltas],
                    block.repeats,
                )
            )
            arriving = block.output_filters
        return indices

    def sample_decisions(self, rng: random.Random) -> list[int]:
        """Uniformly random choice indices."""
        return [rng.randrange(d.size) for d in self._decisions]

    def sample(self, rng: random.Random) -> Architecture:
        """A uniformly random point of the space."""
        return self.to_architecture(self.sample_decisions(rng))

    def reference_decisions(self) -> list[int]:
        """The choices that reproduce the reference stages (MobileNetV2's shape)."""
        indices: list[int] = []
        for b, stage in enumerate(self.stages):
            where = f"space.stages[{b}]"
            op_name = "dconv" if stage.expansion == 1 else f"mbconv{stage.expansion}"
            indices.append(_index(f"{where} reference op", self.ops, op_name))
            indices.append(_index(f"{where} reference kernel", self.kernels, 3))
            indices.append(_index(f"{where} reference se", self.se_ratios, 0.0))
            indices.append(_index(f"{where} reference skip", self.skips, "identity"))
            indices.append(_index(f"{where} reference filters", self.filter_ratios, 1.0))
            indices.append(_index(f"{where} reference layers", self.layer_deltas, 0))
        return indices

    def describe(self) -> dict[str, object]:
        """A JSON-ready summary: per-block choices and the size."""
        per = len(DECISIONS_PER_BLOCK)
        blocks = []
        for b, stage in enumerate(self.stages):
            decisions = self._decisions[b * per : (b + 1) * per]
            blocks.append(
                {
                    "block": b,
                    "reference": {
                        "expansion": stage.expansion,
                        "filters": stage.filters,
                        "layers": stage.layers,
                        "stride": stage.stride,
                    },
                    "choices": {
                        kind: list(d.choices)
                        for kind, d in zip(DECISIONS_PER_BLOCK, decisions, strict=True)
                    },
                    "filters": [
                        make_divisible(stage.filters * r, self.filter_divisor)
                        for r in self.filter_ratios
                    ],
                    "layers": [max(1, stage.layers + d) for d in self.layer_deltas],
                }
            )
        return {
            "blocks": blocks,
            "num_blocks": self.num_blocks,
            "num_decisions": len(self._decisions),
            "choices_per_block": self.choices_per_block,
            "size": self.size,
            "log10_size": round(self.log10_size, 3),
            "distinct_size": self.distinct_size,
            "log10_distinct_size": round(self.log10_distinct_size, 3),
            "stem_filters": self.stem_filters,
            "head_filters": self.head_filters,
            "activation": self.activation.value,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "width": self.width,
        }


_OP = re.compile(r"^(conv|dconv|mbconv(\d+))$")


def _parse_op(name: str, where: str) -> tuple[Op, int]:
    match = _OP.match(name) if isinstance(name, str) else None
    if match is None or (match.group(2) is not None and int(match.group(2)) < 2):
        raise ValueError(
            f"{where}: unknown op {name!r} (known: conv, dconv, mbconv<expansion >= 2>)"
        )
    if match.group(2) is not None:
        return Op.MBCONV, int(match.group(2))
    return (Op.CONV if name == "conv" else Op.DCONV), 1


def _op_name(block: BlockSpec) -> str:
    return f"mbconv{block.expansion}" if block.op is Op.MBCONV else block.op.value


def _index(field_name: str, choices: Sequence[object], value: object) -> int:
    for i, choice in enumerate(choices):
        if choice == value:
            return i
    raise ValueError(
        f"{field_name}: {value!r} is not a choice of the space (choices: {list(choices)})"
    )


def _nearest(field_name: str, raw: Sequence[float], actual: Sequence[int], value: int) -> int:
    matches = [i for i, a in enumerate(actual) if a == value]
    if not matches:
        raise ValueError(
            f"{field_name}: {value} is not a choice of the space (choices: {sorted(set(actual))})"
        )
    return min(matches, key=lambda i: abs(raw[i] - value))


def _fmt(value: float) -> str:
    return f"{value:g}"

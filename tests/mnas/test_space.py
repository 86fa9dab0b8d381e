"""The factorized hierarchical search space: size, decisions, mapping both ways."""

from __future__ import annotations

import math
import random

import pytest

from mnas import references
from mnas.arch import Activation, Architecture, Op, Skip, decode
from mnas.space import MOBILENETV2_STAGES, SearchSpace, Stage


def test_paper_typical_case_has_432_choices_per_block_and_about_1e13_points() -> None:
    space = SearchSpace(stages=MOBILENETV2_STAGES[:5])
    assert space.choices_per_block == 432
    assert space.size == 432**5
    assert f"{space.size:.2g}" == "1.5e+13"
    assert math.isclose(space.log10_size, math.log10(432**5))


def test_default_space_has_seven_blocks_of_six_decisions() -> None:
    space = SearchSpace()
    assert space.num_blocks == 7
    assert len(space.decisions) == 42
    assert space.size == 432**7
    assert [d.name for d in space.decisions[:6]] == [
        "block0.op",
        "block0.kernel",
        "block0.se",
        "block0.skip",
        "block0.filters",
        "block0.layers",
    ]
    assert space.decisions[0].choices == ("conv", "dconv", "mbconv3", "mbconv6")
    assert space.decisions[5].choices == ("-1", "+0", "+1")


def test_reference_choices_give_mobilenetv2s_shape() -> None:
    space = SearchSpace()
    arch = space.to_architecture(space.reference_decisions())
    assert arch.blocks == references.get("mobilenetv2").blocks
    assert arch.activation is Activation.RELU  # MnasNet's activation
    with_relu6 = SearchSpace(activation=Activation.RELU6)
    assert with_relu6.to_architecture(with_relu6.reference_decisions()) == references.get(
        "mobilenetv2"
    )


def test_a_thousand_samples_round_trip_through_decisions_and_text() -> None:
    space = SearchSpace()
    rng = random.Random(7)
    for _ in range(1000):
        decisions = space.sample_decisions(rng)
        arch = space.to_architecture(decisions)
        assert decode(arch.canonical) == arch
        again = space.to_decisions(arch)
        assert space.to_architecture(again) == arch
        # Only collapsing choices (filters, layers) may map back to another index.
        for i, (a, b) in enumerate(zip(decisions, again, strict=True)):
            if a != b:
                assert space.decisions[i].name.split(".")[1] in ("filters", "layers")


def test_samples_cover_every_choice_and_only_first_layers_stride() -> None:
    space = SearchSpace()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(200)]
    blocks = [b for a in archs for b in a.blocks]
    assert {b.op for b in blocks} == set(Op)
    assert {b.expansion for b in blocks} == {1, 3, 6}
    assert {b.kernel for b in blocks} == {3, 5}
    assert {b.se_ratio for b in blocks} == {0.0, 0.25}
    assert {b.skip for b in blocks} == set(Skip)
    for arch in archs:
        assert [b.stride for b in arch.blocks] == [s.stride for s in MOBILENETV2_STAGES]
        chain = [arch.stem_filters] + [b.output_filters for b in arch.blocks]
        assert [b.input_filters for b in arch.blocks] == chain[:-1]


def test_filters_round_to_multiples_of_eight_and_blocks_keep_a_layer() -> None:
    space = SearchSpace()
    described = space.describe()["blocks"]
    assert described[1]["filters"] == [16, 24, 32]  # type: ignore[index]
    assert described[0]["filters"] == [16, 16, 24]  # type: ignore[index]
    assert described[0]["layers"] == [1, 1, 2]  # type: ignore[index]


def test_sampling_is_reproducible_from_a_seed() -> None:
    space = SearchSpace()
    assert space.sample(random.Random(3)) == space.sample(random.Random(3))


def test_configurable_choices_blocks_and_reference() -> None:
    space = SearchSpace(
        stages=(Stage(1, 16, 1, 1), Stage(6, 24, 2, 2)),
        ops=("dconv", "mbconv6"),
        kernels=(3, 5, 7),
        skips=("identity",),
        se_ratios=(0.0,),
        filter_ratios=(1.0,),
        layer_deltas=(0, 1),
    )
    assert space.size == (2 * 3 * 1 * 1 * 1 * 2) ** 2
    arch = space.to_architecture([1, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert str(arch.blocks[0]) == "r2_k7_s11_e6_i32_o16"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"ops": ()}, "space.ops"),
        ({"ops": ("conv", "mbconv1")}, "mbconv1"),
        ({"ops": ("sepconv",)}, "sepconv"),
        ({"kernels": (3, 4)}, "space.kernels"),
        ({"skips": ("pool", "dense")}, "dense"),
        ({"se_ratios": (0.0, 1.5)}, "space.se_ratios"),
        ({"filter_ratios": (0.0,)}, "space.filter_ratios"),
        ({"kernels": (3, 3)}, "repeat"),
        ({"stages": (Stage(1, 16, 0, 1),)}, "space.stages[0].layers"),
        ({"ops": ("conv", "mbconv3")}, "reference op"),  # MobileNetV2 needs dconv and mbconv6
        ({"resolution": 0}, "space.resolution"),
    ],
)
def test_bad_space_configuration_names_the_field(change: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        SearchSpace(**change)  # type: ignore[arg-type]
    assert needle in str(info.value)


def _mnv2_with(index: int, **changes: object) -> Architecture:
    base = references.get("mobilenetv2")
    blocks = list(base.blocks)
    blocks[index] = type(blocks[index])(**{**blocks[index].__dict__, **changes})
    return Architecture(blocks=tuple(blocks))


@pytest.mark.parametrize(
    ("arch", "needle"),
    [
        (_mnv2_with(2, kernel=7), "blocks[2].kernel"),
        (_mnv2_with(2, se_ratio=0.5), "blocks[2].se_ratio"),
        (_mnv2_with(3, expansion=4), "blocks[3].op"),
        (_mnv2_with(1, output_filters=28), "blocks[1].output_filters"),
        (_mnv2_with(3, repeats=9), "blocks[3].repeats"),
        (_mnv2_with(4, stride=2), "blocks[4].stride"),
        (_mnv2_with(4, input_filters=32), "blocks[4].input_filters"),
        (Architecture(blocks=references.get("mobilenetv2").blocks[:3]), "blocks"),
        (references.get("mnasnet-small"), "stem_filters"),
        (references.get("mobilenetv2"), "activation"),
    ],
)
def test_architectures_outside_the_space_raise_naming_the_field(
    arch: Architecture, needle: str
) -> None:
    with pytest.raises(ValueError) as info:
        SearchSpace().to_decisions(arch)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("decisions", "needle"),
    [
        ([0] * 41, "expected 42"),
        ([0] * 41 + [3], "block6.layers"),
        ([-1] + [0] * 41, "block0.op"),
        ([0, 0, 0, 0, 0, 0.5] + [0] * 36, "block0.layers"),
    ],
)
def test_bad_decisions_raise_naming_the_decision(decisions: list[int], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        SearchSpace().to_architecture(decisions)
    assert needle in str(info.value)

"""The layer recipe: what each layer is made of, as primitives every backend maps."""

from __future__ import annotations

import random

import pytest

from mnas import references
from mnas.arch import decode
from mnas.layers import LayerPlan, plan
from mnas.primitives import (
    Add,
    AvgPool,
    Conv,
    Depthwise,
    Primitive,
    SqueezeExcite,
    entry,
    layer_recipe,
)
from mnas.space import SearchSpace


def _names(layer: LayerPlan) -> list[str]:
    return [step.name for step in layer_recipe(layer).steps]


def test_mnasnet_a1_layers_in_order() -> None:
    layers = plan(references.get("mnasnet-a1")).layers
    assert _names(layers[0]) == ["dw", "project"]  # e1, noskip
    assert _names(layers[1]) == ["expand", "dw", "project"]  # strides: no residual
    assert _names(layers[2]) == ["expand", "dw", "project", "add"]
    se_layer = layers[4]  # r3_k5_s22_e3_i24_o40_se0.25, its second layer
    recipe = layer_recipe(se_layer)
    assert recipe.name == "blocks.2.1"
    assert recipe.steps == (
        Conv("expand", 40, 120, 1, 1, 28, se_layer.activation),
        Depthwise("dw", 120, 5, 1, 28, se_layer.activation),
        SqueezeExcite("se", 120, 10, 28),  # squeeze from the declared input filters: 40 / 4
        Conv("project", 120, 40, 1, 1, 28, None),
        Add("add", (), 40, 28),
    )


def test_pool_skip_pools_and_projects_the_input() -> None:
    arch = decode("r1_k3_s22_e1_i32_o16_conv_poolskip", stem_filters=32)
    (layer,) = plan(arch, resolution=16).layers
    act = layer.activation
    assert layer_recipe(layer).steps == (
        Conv("conv", 32, 16, 3, 2, 4, act),
        Add("add", (AvgPool("pool", 32, 2, 4), Conv("proj", 32, 16, 1, 1, 4, None)), 16, 4),
    )


def _out_channels(step: Primitive, channels: int) -> int:
    if isinstance(step, Conv):
        assert step.in_channels == channels
        return step.out_channels
    if isinstance(step, (Depthwise, SqueezeExcite, AvgPool)):
        assert step.channels == channels
        return channels
    return channels


def test_channels_chain_through_every_path_of_random_networks() -> None:
    space = SearchSpace()
    rng = random.Random(3)
    for _ in range(30):
        for layer in plan(space.sample(rng), resolution=64).layers:
            channels = layer.in_channels
            for step in layer_recipe(layer).steps:
                channels = _out_channels(step, channels)
                if isinstance(step, Add):
                    through = layer.in_channels
                    for part in step.shortcut:
                        through = _out_channels(part, through)
                    assert through == channels == layer.out_channels
            assert channels == layer.out_channels


def test_a_table_without_the_entry_names_the_known_keys() -> None:
    table = {Conv: "conv", Depthwise: "depthwise"}
    assert entry(table, Conv) == "conv"
    with pytest.raises(KeyError, match=r"no entry for Add \(known: Conv, Depthwise\)"):
        entry(table, Add)

"""Space presets in a spec: a named stage schedule, written in, overridden by stages."""

from __future__ import annotations

import pytest

from mnas.layers import plan
from mnas.space import MOBILENETV2_STAGES, SMALL_IMAGE_STAGES
from services.controller.spec import resolve
from services.controller.strategies import STRATEGIES
from tests.controller.test_spec import DEVICES, FASHION, spec


def test_the_paper_s_space_is_the_default_preset() -> None:
    resolved = resolve(spec(), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    assert resolved.spec.space.preset == "mnasnet"
    assert resolved.space.stages == MOBILENETV2_STAGES


def test_the_small_image_preset_keeps_spatial_structure_at_28_pixels() -> None:
    resolved = resolve(
        spec(**{"space.preset": "small-images", "space.width": 0.5}),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    space = resolved.space
    assert space.stages == SMALL_IMAGE_STAGES
    assert len(resolved.spec.space.stages) == len(SMALL_IMAGE_STAGES)
    net = plan(
        space.to_architecture(space.reference_decisions()), resolution=28, num_classes=10, width=0.5
    )
    # Every layer computes on at least a 4x4 map (the paper's space: 1x1 from block 5 on).
    assert min(layer.out_size for layer in net.layers) == 4
    assert net.layers[0].in_size == 14


def test_given_stages_win_over_the_preset() -> None:
    stages = [
        {"expansion": 1, "filters": 16, "layers": 1, "stride": 1},
        {"expansion": 6, "filters": 24, "layers": 2, "stride": 2},
    ]
    resolved = resolve(
        spec(**{"space.preset": "small-images", "space.stages": stages}),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert resolved.space.num_blocks == 2


def test_an_unknown_preset_names_the_field_and_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        resolve(
            spec(**{"space.preset": "cifar"}),
            dataset=FASHION,
            device_classes=DEVICES,
            strategies=STRATEGIES,
        )
    message = str(info.value)
    assert message.startswith("spec.space.preset: unknown preset 'cifar'"), message
    assert "small-images" in message and "mnasnet" in message


def test_the_imagenet_example_is_the_paper_s_search() -> None:
    from pathlib import Path

    from mnas.specfile import parse_spec
    from services.controller.spec import Dataset

    text = Path(__file__).resolve().parents[2] / "examples" / "mnasnet-imagenet.yaml"
    imagenet = Dataset(name="imagenet", classes=1000, resolution=224, examples=1_281_167)
    resolved = resolve(
        parse_spec(text.read_text()),
        dataset=imagenet,
        device_classes={"pixel-1"},
        strategies=STRATEGIES,
    )
    s = resolved.spec
    assert resolved.space.stages == MOBILENETV2_STAGES
    assert (s.space.resolution, s.space.num_classes, s.latency.resolution) == (224, 1000, 224)
    assert (s.objective.target_latency_seconds, s.objective.alpha) == (0.075, -0.07)
    assert (s.training.epochs, s.training.validation_examples) == (5, 50_000)

"""Analytic parameter and multiply-add counts against published figures."""

from __future__ import annotations

import pytest

from mnas import references
from mnas.cost import count

# torchvision's model pages: MNASNet1_0_Weights.IMAGENET1K_V1.meta["num_params"] (mnasnet1_0
# is MnasNet-B1) and MobileNet_V2_Weights.IMAGENET1K_V1.meta["num_params"].
TORCHVISION_MNASNET1_0_PARAMS = 4_383_312
TORCHVISION_MOBILENET_V2_PARAMS = 3_504_872


def test_mnasnet_a1_matches_the_paper() -> None:
    report = count(references.get("mnasnet-a1"), resolution=224, num_classes=1000)
    # Paper and official README: 3.9M parameters, 312M multiply-adds.
    assert report.params == 3_887_038
    assert round(report.params / 1e5) == 39
    assert report.macs == 311_579_072
    assert round(report.macs / 1e6) == 312


def test_mnasnet_a1_width_1_4_matches_the_official_readme() -> None:
    report = count(references.get("mnasnet-a1"), width=1.4)
    assert report.params == 6_105_992
    assert round(report.params / 1e5) == 61


def test_mnasnet_b1_is_torchvision_mnasnet1_0_exactly() -> None:
    assert count(references.get("mnasnet-b1")).params == TORCHVISION_MNASNET1_0_PARAMS


def test_mobilenetv2_is_torchvision_mobilenet_v2_exactly() -> None:
    report = count(references.get("mobilenetv2"))
    assert report.params == TORCHVISION_MOBILENET_V2_PARAMS
    assert round(report.macs / 1e6) == 301  # published: 300M


def test_per_block_costs_add_up_to_the_total() -> None:
    report = count(references.get("mnasnet-a1"))
    assert report.stem.params + sum(b.params for b in report.blocks) + report.head.params == (
        report.params
    )
    assert report.stem.macs + sum(b.macs for b in report.blocks) + report.head.macs == (report.macs)
    assert [b.out_size for b in report.blocks] == [112, 56, 28, 14, 14, 7, 7]


def test_classes_change_only_the_classifier_and_resolution_only_the_macs() -> None:
    arch = references.get("mnasnet-a1")
    base = count(arch)
    ten = count(arch, num_classes=10)
    assert base.params - ten.params == 1280 * 990 + 990
    small = count(arch, resolution=112)
    assert small.params == base.params
    assert small.macs < base.macs / 3


@pytest.mark.parametrize("bad", [{"width": 0.0}, {"resolution": 0}, {"num_classes": 0}])
def test_bad_build_parameters_raise(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        count(references.get("mnasnet-a1"), **bad)  # type: ignore[arg-type]

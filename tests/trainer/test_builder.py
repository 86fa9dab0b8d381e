"""The PyTorch builder: exact parameter counts, shapes, padding and shortcuts."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mnas import references
from mnas.arch import Architecture, Op, decode
from mnas.cost import count
from mnas.layers import Shortcut, plan
from mnas.space import SearchSpace
from services.trainer.builder import SameConv2d, build_torch


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(references.REFERENCES))
def test_reference_parameter_counts_match_the_analytic_count(name: str) -> None:
    arch = references.get(name)
    assert n_params(build_torch(arch)) == count(arch).params
    assert (
        n_params(build_torch(arch, width=1.4, num_classes=10))
        == count(arch, width=1.4, num_classes=10).params
    )


def random_archs(n: int, seed: int = 0) -> list[Architecture]:
    space = SearchSpace()
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def test_fifty_random_architectures_match_the_analytic_count() -> None:
    archs = random_archs(50)
    layers = [layer for a in archs for layer in plan(a).layers]
    # Coverage: every op, kernel, SE and shortcut kind, pooled and projected shortcuts.
    assert {layer.op for layer in layers} == set(Op)
    assert {layer.kernel for layer in layers} == {3, 5}
    assert {bool(layer.se_channels) for layer in layers} == {True, False}
    assert {layer.shortcut for layer in layers} == set(Shortcut)
    assert any(layer.shortcut_pools and layer.shortcut_projects for layer in layers)
    assert any(layer.shortcut_projects and not layer.shortcut_pools for layer in layers)
    for arch in archs:
        model = build_torch(arch, num_classes=10, resolution=32)
        assert n_params(model) == count(arch, num_classes=10, resolution=32).params, arch


def test_forward_gives_logits_at_any_resolution() -> None:
    model = build_torch(references.get("mnasnet-a1"), num_classes=10, resolution=32).eval()
    with torch.no_grad():
        for size in (32, 33, 57):
            assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize(("size", "kernel"), [(8, 3), (7, 3), (8, 5), (9, 5), (1, 3)])
def test_same_conv_pads_like_tensorflow(size: int, kernel: int) -> None:
    """Stride 2 "same": output ceil(n/2), the extra padding at the bottom and right."""
    conv = SameConv2d(1, 1, kernel, 2)
    x = torch.randn(1, 1, size, size)
    y = conv(x)
    assert y.shape[-1] == -(-size // 2)
    total = max((y.shape[-1] - 1) * 2 + kernel - size, 0)
    before = total // 2
    expected = F.conv2d(
        F.pad(x, (before, total - before, before, total - before)), conv.weight, stride=2
    )
    torch.testing.assert_close(y, expected)


def test_identity_shortcut_only_where_stride_1_and_filters_match() -> None:
    arch = decode("r2_k3_s22_e6_i32_o24 r2_k3_s11_e6_i24_o24 r1_k3_s11_e1_i24_o24_noskip")
    shortcuts = [layer.shortcut for layer in plan(arch).layers]
    assert shortcuts == [
        Shortcut.NONE,
        Shortcut.IDENTITY,
        Shortcut.IDENTITY,
        Shortcut.IDENTITY,
        Shortcut.NONE,
    ]


def test_pool_skip_adds_the_pooled_projected_input() -> None:
    """With the main path zeroed, a pool-skip layer outputs BN(conv1x1(avgpool(x)))."""
    arch = decode("r1_k3_s22_e1_i32_o16_poolskip", stem_filters=32)
    model = build_torch(arch, num_classes=2, resolution=16).eval()
    layer: Any = model.get_submodule("blocks.0.0")
    torch.nn.init.zeros_(layer.project.bn.weight)
    torch.nn.init.zeros_(layer.project.bn.bias)
    x = torch.randn(1, 32, 7, 7)
    with torch.no_grad():
        y = layer(x)
        pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        expected = layer.shortcut.proj.bn(F.conv2d(pooled, layer.shortcut.proj.conv.weight))
    assert y.shape == (1, 16, 4, 4)
    torch.testing.assert_close(y, expected)
    # The overhanging window at the edge averages only the pixels it covers.
    torch.testing.assert_close(pooled[..., 3, 3], x[..., 6, 6])


def test_small_reference_takes_the_channels_that_arrive() -> None:
    """mnasnet-small declares i16 after an 8-filter stem: convolutions take 8, no residual."""
    first = plan(references.get("mnasnet-small")).layers[0]
    assert (first.in_channels, first.mid_channels, first.out_channels) == (8, 8, 8)
    assert first.shortcut is Shortcut.NONE
    model = build_torch(references.get("mnasnet-small"), num_classes=10, resolution=32).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_batch_norm_uses_the_mnasnet_settings() -> None:
    model = build_torch(references.get("mnasnet-a1"))
    bn = model.stem.bn
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)

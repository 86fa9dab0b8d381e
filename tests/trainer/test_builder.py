"""The PyTorch builder: exact parameter counts, shapes, padding and shortcuts."""

from __future__ import annotations

import math
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


def _official_std(conv: torch.nn.Conv2d) -> float:
    """The official MnasNet ``conv_kernel_initializer``: normal(0, sqrt(2 / fan_out)) with
    fan_out = kernel_height * kernel_width * out_filters of TensorFlow's kernel shape,
    which is (kh, kw, in, out) for a convolution and (kh, kw, channels, 1) for a depthwise
    one (``DepthwiseConv2D``'s depth multiplier is 1)."""
    kh, kw = conv.kernel_size
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    out_filters = 1 if depthwise else conv.out_channels
    return math.sqrt(2.0 / (kh * kw * out_filters))


def _kind(name: str, conv: torch.nn.Conv2d) -> str:
    if conv.groups > 1:
        return "depthwise"
    if ".se." in name:
        return "squeeze-excite"
    return "pointwise" if conv.kernel_size == (1, 1) else "full"


def test_every_convolution_kind_starts_with_the_official_spread() -> None:
    """Pooled over every convolution of a kind, weights divided by the official standard
    deviation have unit spread (a depthwise kernel counted with C * k^2 fan-out, as
    ``kaiming_normal_(mode="fan_out")`` does, would give about 1/sqrt(C))."""
    torch.manual_seed(0)
    model = build_torch(references.get("mnasnet-a1"), num_classes=10, resolution=32)
    pooled: dict[str, list[torch.Tensor]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            scaled = module.weight.detach().flatten() / _official_std(module)
            pooled.setdefault(_kind(name, module), []).append(scaled)
    assert set(pooled) == {"full", "depthwise", "pointwise", "squeeze-excite"}
    for kind, parts in pooled.items():
        values = torch.cat(parts)
        tolerance = 5 / math.sqrt(values.numel())  # five standard errors of the estimate
        assert abs(float(values.mean())) < tolerance, kind
        assert float(values.std()) == pytest.approx(1.0, abs=tolerance), kind


def test_classifier_starts_uniform_within_one_over_sqrt_outputs() -> None:
    model = build_torch(references.get("mnasnet-a1"), num_classes=10, resolution=32)
    bound = 1.0 / math.sqrt(10)
    weight = model.classifier.weight.detach()
    assert float(weight.abs().max()) <= bound
    assert float(weight.abs().max()) > 0.9 * bound
    assert float(model.classifier.bias.detach().abs().max()) == 0.0

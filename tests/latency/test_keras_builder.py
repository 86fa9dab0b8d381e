"""The Keras builder against the analytic counter and the PyTorch builder."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import torch

from mnas import references
from mnas.arch import Activation, Architecture
from mnas.cost import count
from mnas.layers import plan
from services.latency.keras_builder import build_keras
from services.trainer.builder import build_torch
from tests.latency.archs import ALL_FEATURES, coverage, random_architectures
from tests.latency.weights_copy import copy_torch_weights, modules_with_parameters

RANDOM = random_architectures(50, seed=1)
PARITY = RANDOM[:12]
PARITY_RESOLUTION = 50  # 25, 13, 7, 4, 2: stride 2 on odd sizes throughout


def _trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _torch_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_random_architectures_cover_every_layer_kind() -> None:
    seen = coverage([plan(a, resolution=64, num_classes=10) for a in RANDOM])
    assert seen >= ALL_FEATURES, sorted(ALL_FEATURES - seen)
    parity = coverage([plan(a, resolution=PARITY_RESOLUTION, num_classes=10) for a in PARITY])
    assert parity >= ALL_FEATURES | {"stride 2 on odd size"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnasnet-a1", 3_887_038),
        ("mnasnet-b1", 4_383_312),  # torchvision mnasnet1_0
        ("mnasnet-small", None),
        ("mobilenetv2", 3_504_872),  # torchvision mobilenet_v2
    ],
)
def test_reference_parameters_match_the_counter_and_torch(name: str, expected: int | None) -> None:
    arch = references.get(name)
    params = _trainable_params(build_keras(arch))
    assert params == count(arch).params == _torch_params(build_torch(arch))
    if expected is not None:
        assert params == expected


@pytest.mark.parametrize("width", [0.5, 1.4])
def test_width_scaled_parameters_match(width: float) -> None:
    arch = references.get("mnasnet-a1")
    params = _trainable_params(build_keras(arch, num_classes=10, resolution=64, width=width))
    assert params == count(arch, num_classes=10, resolution=64, width=width).params
    assert params == _torch_params(build_torch(arch, num_classes=10, resolution=64, width=width))


@pytest.mark.parametrize("index", range(len(RANDOM)))
def test_random_parameters_match_the_counter_and_torch(index: int) -> None:
    arch = RANDOM[index]
    model = build_keras(arch, num_classes=10, resolution=64)
    torch_model = build_torch(arch, num_classes=10, resolution=64)
    assert _trainable_params(model) == count(arch, num_classes=10, resolution=64).params
    assert _trainable_params(model) == _torch_params(torch_model)
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted == set(modules_with_parameters(torch_model))


def test_batch_size_is_fixed_or_open() -> None:
    arch = RANDOM[0]
    assert build_keras(arch, resolution=32, batch_size=1).inputs[0].shape == (1, 32, 32, 3)
    assert build_keras(arch, resolution=32, batch_size=None).inputs[0].shape == (None, 32, 32, 3)


def _randomize_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def _assert_same_logits(arch: Architecture, resolution: int, seed: int) -> None:
    torch.manual_seed(seed)
    torch_model = build_torch(arch, num_classes=10, resolution=resolution)
    _randomize_batch_norm(torch_model, torch.Generator().manual_seed(seed))
    torch_model.eval()
    model = build_keras(arch, num_classes=10, resolution=resolution, batch_size=None)
    copy_torch_weights(torch_model, model)

    x = np.random.default_rng(seed).standard_normal((2, 3, resolution, resolution))
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    got = keras.ops.convert_to_numpy(model(x.transpose(0, 2, 3, 1), training=False))
    assert got.shape == expected.shape == (2, 10)
    scale = float(np.abs(expected).max())
    assert scale > 1e-2  # not a degenerate network
    # float32 rounding grows with the activations (logits up to ~50 with the official
    # initialisation): allow 1e-4 per 10 of the largest logit, far below a wiring error.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, scale / 10))


@pytest.mark.parametrize("index", range(len(PARITY)))
def test_random_builders_compute_the_same_function(index: int) -> None:
    _assert_same_logits(PARITY[index], PARITY_RESOLUTION, seed=index)


@pytest.mark.parametrize("name", ["mnasnet-a1", "mobilenetv2", "mnasnet-small"])
def test_reference_builders_compute_the_same_function(name: str) -> None:
    _assert_same_logits(references.get(name), 112, seed=7)  # 56, 28, 14, 7, 7, 4


@pytest.mark.parametrize("activation", list(Activation), ids=lambda a: a.value)
def test_every_activation_builds_alike_in_both_builders(activation: Activation) -> None:
    arch = dataclasses.replace(references.get("mnasnet-a1"), activation=activation)
    params = _trainable_params(build_keras(arch, num_classes=10, resolution=64))
    assert params == count(arch, num_classes=10, resolution=64).params
    assert params == _torch_params(build_torch(arch, num_classes=10, resolution=64))
    _assert_same_logits(arch, 64, seed=3)

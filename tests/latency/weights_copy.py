"""Test helper: carry a PyTorch module's weights into the Keras model of the same plan.

Layers are matched by name: every Keras layer holding weights is named by the module path
of its PyTorch counterpart.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from torch import nn

__all__ = ["copy_torch_weights", "modules_with_parameters"]


def _conv(module: nn.Module, layer: keras.layers.Layer) -> list[np.ndarray]:
    assert isinstance(module, nn.Conv2d)
    weight = module.weight.detach().numpy()
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    else:
        kernel = weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    return [kernel] + ([module.bias.detach().numpy()] if module.bias is not None else [])


def _batch_norm(module: nn.Module, layer: keras.layers.Layer) -> list[np.ndarray]:
    assert isinstance(module, nn.BatchNorm2d)
    assert module.running_mean is not None and module.running_var is not None
    return [
        module.weight.detach().numpy(),
        module.bias.detach().numpy(),
        module.running_mean.numpy(),
        module.running_var.numpy(),
    ]


def _linear(module: nn.Module, layer: keras.layers.Layer) -> list[np.ndarray]:
    assert isinstance(module, nn.Linear)
    return [module.weight.detach().numpy().T, module.bias.detach().numpy()]


_CONVERTERS: dict[type[nn.Module], Callable[[nn.Module, keras.layers.Layer], list[np.ndarray]]] = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _batch_norm,
    nn.Linear: _linear,
}


def modules_with_parameters(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that hold parameters themselves, by module path."""
    return {
        name: module
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    }


def copy_torch_weights(torch_model: nn.Module, keras_model: keras.Model) -> None:
    """Set every weight of ``keras_model`` from the same-named module of ``torch_model``."""
    modules = modules_with_parameters(torch_model)
    layers = {layer.name: layer for layer in keras_model.layers if layer.weights}
    if set(modules) != set(layers):
        raise ValueError(
            f"names differ: torch only {sorted(set(modules) - set(layers))}, "
            f"keras only {sorted(set(layers) - set(modules))}"
        )
    for name, layer in layers.items():
        module = modules[name]
        kind = next((k for k in _CONVERTERS if isinstance(module, k)), None)
        if kind is None:
            raise TypeError(f"{name}: no weight conversion for {type(module).__name__}")
        layer.set_weights([w.astype(np.float32) for w in _CONVERTERS[kind](module, layer)])

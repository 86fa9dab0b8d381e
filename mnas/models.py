"""PyTorch modules for architectures: :func:`build_model` makes one freshly initialised,
:func:`load_model` one with the weights a search kept for a trial.

The module is the trainer's own (the same layers, parameter names and initialisation), so
a ``state_dict`` saved by a trainer loads into it unchanged. PyTorch is imported when a
function here is called, not with ``mnas``.
"""

from __future__ import annotations

import io
from types import ModuleType
from typing import TYPE_CHECKING

from mnas import references
from mnas.arch import Architecture, decode
from mnas.build import BuildParams
from mnas.client_errors import SearchNotFound
from mnas.results import SearchInfo, Trial

if TYPE_CHECKING:
    import torch

    from mnas.client import Search

__all__ = ["build_model", "load_model"]

_TORCH_MISSING = (
    "needs PyTorch, which mnas installs with its trainer extra: pip install 'mnas[trainer]'"
)


def build_model(
    arch: Architecture | Trial | str,
    *,
    search: Search | SearchInfo | None = None,
    num_classes: int | None = None,
    resolution: int | None = None,
    width: float | None = None,
) -> torch.nn.Module:
    """A freshly initialised ``torch.nn.Module`` for ``arch`` (NCHW images in, logits out).

    ``arch``: an :class:`~mnas.arch.Architecture`, a trial, a reference name
    (``mnasnet-a1``) or text that :func:`mnas.arch.decode` reads (the canonical form, or
    bare block strings). Build parameters are those of ``search``'s trials when given,
    else 1000 classes, 224x224 and width 1.0; ``num_classes``, ``resolution`` and
    ``width`` override either.
    """
    builder = _builder("build_model")
    build = _build_params(search)
    model: torch.nn.Module = builder.build_torch(
        _architecture(arch),
        num_classes=num_classes if num_classes is not None else build.num_classes,
        resolution=resolution if resolution is not None else build.resolution,
        width=width if width is not None else build.width,
    )
    return model


def load_model(
    search: Search, trial: int | Trial, *, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Trial ``trial`` of ``search`` as a module with the weights its trainer kept
    (``budget.keep_weights``), built with the search's parameters, on ``device``, in eval
    mode. :class:`~mnas.client.SearchNotFound` when the search has no such trial or kept
    no weights for it."""
    builder = _builder("load_model")
    import torch

    chosen = search.trial(trial) if isinstance(trial, int) else trial
    if chosen is None:
        raise SearchNotFound(f"search {search.id!r} has no trial {trial}")
    data = search.weights(chosen.number)
    state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    model: torch.nn.Module = builder.build_torch(chosen.arch(), **_build_params(search).to_dict())
    model.load_state_dict(state)
    return model.to(device).eval()


def _build_params(search: Search | SearchInfo | None) -> BuildParams:
    if search is None:
        return BuildParams()
    if isinstance(search, SearchInfo):
        return search.build
    # A handle made from a bare message (an id only) has not seen the spec yet.
    return (search.info if search.proto.HasField("spec") else search.refresh()).build


def _architecture(arch: Architecture | Trial | str) -> Architecture:
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, Trial):
        return arch.arch()
    if arch in references.REFERENCES:
        return references.get(arch)
    return decode(arch)


def _builder(caller: str) -> ModuleType:
    """The trainer's PyTorch builder; ``ImportError`` naming the extra without PyTorch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(f"mnas.{caller} {_TORCH_MISSING}") from None
    from services.trainer import builder

    return builder

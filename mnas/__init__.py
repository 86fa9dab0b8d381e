"""mnas: platform-aware neural architecture search after MnasNet.

The SDK (``Client``, its result types) and the model helpers (``build_model``,
``load_model``) are imported when first used, so ``import mnas`` needs neither gRPC nor
PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "Client": "mnas.client",
    "Search": "mnas.client",
    "MnasError": "mnas.client",
    "InvalidSpec": "mnas.client",
    "SearchExists": "mnas.client",
    "SearchNotFound": "mnas.client",
    "ControllerUnavailable": "mnas.client",
    "Unauthenticated": "mnas.client",
    "SearchInfo": "mnas.results",
    "SearchState": "mnas.results",
    "StrategyStatus": "mnas.results",
    "SearchEvent": "mnas.results",
    "EventKind": "mnas.results",
    "Trial": "mnas.results",
    "TrialState": "mnas.results",
    "Latency": "mnas.results",
    "LatencyFigure": "mnas.results",
    "Reference": "mnas.results",
    "ReferenceState": "mnas.results",
    "BuildParams": "mnas.build",
    "build_model": "mnas.models",
    "load_model": "mnas.models",
}
__all__ = [
    "BuildParams",
    "Client",
    "ControllerUnavailable",
    "EventKind",
    "InvalidSpec",
    "Latency",
    "LatencyFigure",
    "MnasError",
    "Reference",
    "ReferenceState",
    "Search",
    "SearchEvent",
    "SearchExists",
    "SearchInfo",
    "SearchNotFound",
    "SearchState",
    "StrategyStatus",
    "Trial",
    "TrialState",
    "Unauthenticated",
    "build_model",
    "load_model",
]

if TYPE_CHECKING:
    from mnas.build import BuildParams
    from mnas.client import (
        Client,
        ControllerUnavailable,
        InvalidSpec,
        MnasError,
        Search,
        SearchExists,
        SearchNotFound,
        Unauthenticated,
    )
    from mnas.models import build_model, load_model
    from mnas.results import (
        EventKind,
        Latency,
        LatencyFigure,
        Reference,
        ReferenceState,
        SearchEvent,
        SearchInfo,
        SearchState,
        StrategyStatus,
        Trial,
        TrialState,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mnas' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

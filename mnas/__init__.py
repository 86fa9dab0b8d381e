"""mnas: platform-aware neural architecture search after MnasNet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client"]

if TYPE_CHECKING:
    from mnas.client import Client


def __getattr__(name: str) -> Any:
    # The SDK pulls in gRPC; import it only when asked for.
    if name == "Client":
        from mnas.client import Client

        return Client
    raise AttributeError(f"module 'mnas' has no attribute {name!r}")

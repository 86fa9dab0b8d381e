"""mnas: platform-aware neural architecture search after MnasNet."""

from __future__ import annotations

__version__ = "0.1.0"

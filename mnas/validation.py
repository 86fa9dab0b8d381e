"""Checks of plain values that raise ``ValueError`` naming the field."""

from __future__ import annotations

__all__ = ["check_int"]


def check_int(field: str, value: object, low: int, high: int | None = None) -> None:
    """``value`` must be an integer (not a bool) in ``[low, high]`` (``high`` None: no cap)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{field}: must be {bound}, got {value}")

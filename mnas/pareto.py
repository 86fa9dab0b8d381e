"""The Pareto front of accuracy (higher is better) against latency (lower is better)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["pareto_front"]

T = TypeVar("T")


def pareto_front(
    items: Iterable[T], *, accuracy: Callable[[T], float], latency: Callable[[T], float]
) -> list[T]:
    """The items no other item beats on both counts, by increasing latency.

    An item is dominated when another is at least as accurate and at least as fast, and
    strictly better on one of the two. Of exact ties the first is kept.
    """
    ordered = sorted(items, key=lambda item: (latency(item), -accuracy(item)))
    front: list[T] = []
    best = float("-inf")
    for item in ordered:
        if accuracy(item) > best:
            front.append(item)
            best = accuracy(item)
    return front

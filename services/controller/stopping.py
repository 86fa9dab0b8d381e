"""Early stopping: the median stopping rule over intermediate held-out accuracies.

Every trial of a search trains under the same step budget and evaluates at the same
steps (``training.evaluate_every_steps``), so completed trials give, for each of those
steps, the accuracy they had reached there. A running trial is stopped at step ``s``
when the best accuracy it has reported so far is strictly below the median of the
completed trials' accuracies at ``s`` (Vizier's median stopping rule, with the value at
``s`` where Vizier averages up to ``s``), once at least ``min_trials`` completed trials
reported ``s`` and ``s >= start_step``.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterable

__all__ = ["MedianStopping"]


class MedianStopping:
    """Intermediate accuracies of completed trials, and the decision for running ones."""

    def __init__(self, *, min_trials: int, start_step: int = 0) -> None:
        if min_trials < 1:
            raise ValueError(f"min_trials: must be >= 1, got {min_trials}")
        self.min_trials = min_trials
        self.start_step = start_step
        self._lock = threading.Lock()
        self._by_step: dict[int, dict[int, float]] = {}  # step -> trial number -> accuracy

    def add_completed(self, number: int, evaluations: Iterable[tuple[int, float]]) -> None:
        """Record a completed trial's ``(step, accuracy)`` reports (again: replaced)."""
        with self._lock:
            for step, accuracy in evaluations:
                self._by_step.setdefault(step, {})[number] = accuracy

    def median_at(self, step: int) -> float | None:
        """The median of the completed trials' accuracies at ``step``; None with fewer
        than ``min_trials`` of them."""
        with self._lock:
            values = list(self._by_step.get(step, {}).values())
        if len(values) < self.min_trials:
            return None
        return float(statistics.median(values))

    def should_stop(self, step: int, best_so_far: float) -> bool:
        """Whether a trial whose best accuracy up to ``step`` is ``best_so_far`` stops."""
        if step < self.start_step:
            return False
        median = self.median_at(step)
        return median is not None and best_so_far < median

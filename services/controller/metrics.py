"""The controller's Prometheus metrics, registered in a registry passed in.

``mnas_search_*`` series carry a ``search`` label (one series set per search this process
runs or resumed); ``mnas_worker_*`` describe the trainer and latency endpoints. The worker
pools and the samples-per-hour window are read at scrape time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.controller.workers import WorkerPool

__all__ = [
    "ENDED_SEARCHES_KEPT",
    "PHASES",
    "RETRY_KINDS",
    "SAMPLES_WINDOW_SECONDS",
    "ControllerMetrics",
    "SearchMetrics",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2)
_TRIAL_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_PHASE_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_ACCURACY_BUCKETS = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0,
)  # fmt: skip
# From 0: an absolute reward may be negative, and prometheus_client drops ``_sum`` from a
# histogram with negative buckets.
_REWARD_BUCKETS = (
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.25, 1.5, 2.0,
)  # fmt: skip

# Where a trial's time goes: waiting for a worker slot, the Measure call, the Train call,
# the Score call.
PHASES = ("queued", "measuring", "training", "scoring")
# The kinds of worker whose failed step a trial retries.
RETRY_KINDS = ("latency", "trainer", "reward")
# The sliding window of ``mnas_search_samples_per_hour``.
SAMPLES_WINDOW_SECONDS = 900.0
# The shortest span samples per hour are counted over: a trial that ends a few seconds
# after a start must not read as thousands per hour.
MIN_SAMPLES_SPAN_SECONDS = 60.0
# Ended searches whose series stay exported (the newest); older ones are removed, so the
# series a long-lived controller exports stay bounded.
ENDED_SEARCHES_KEPT = 20
_HOUR = 3600.0


class SearchMetrics:
    """One search's series; the runner records through it as its trials change state."""

    def __init__(self, parent: ControllerMetrics, search_id: str) -> None:
        self.search_id = search_id
        self.trials_running = parent.trials_running.labels(search_id)
        self._parent = parent
        self._clock = parent.clock
        self._lock = threading.Lock()
        self._started = self._clock()
        self._ended = False
        self._samples: deque[float] = deque()  # clock readings of the samples in the window
        self._phases = {p: parent.trial_phase_seconds.labels(search_id, p) for p in PHASES}
        # Every state and kind shows 0 at once, so rates and sums have a series to read.
        for state in ("completed", "stopped", "failed", "cancelled"):
            parent.trials_finished.labels(search_id, state)
        for kind in RETRY_KINDS:
            parent.trial_retries.labels(search_id, kind)
        self.trials_running.set(0)

    def set_budget(self, max_trials: int, max_failed_trials: int) -> None:
        self._parent.budget_trials.labels(self.search_id).set(max_trials)
        self._parent.budget_failed_trials.labels(self.search_id).set(max_failed_trials)

    def set_done(self, trials: int) -> None:
        """Trials completed or stopped so far, from the search's record (which, unlike the
        counters, survives a restart of the controller)."""
        self._parent.trials_done.labels(self.search_id).set(trials)

    def set_best(self, reward: float, accuracy: float, latency_seconds: float) -> None:
        """The best completed trial so far: its reward, accuracy and latency."""
        self._parent.best_reward.labels(self.search_id).set(reward)
        self._parent.best_accuracy.labels(self.search_id).set(accuracy)
        self._parent.best_latency.labels(self.search_id).set(latency_seconds)

    def phase(self, phase: str, seconds: float) -> None:
        """Time spent in one phase of a trial (per attempt, failed ones included)."""
        self._phases[phase].observe(seconds)

    def retried(self, kind: str) -> None:
        """A trial's step failed on a worker of ``kind`` (latency, trainer, reward) and is
        tried again."""
        self._parent.trial_retries.labels(self.search_id, kind).inc()

    def finished(
        self, state: str, seconds: float, *, accuracy: float | None, reward: float | None
    ) -> None:
        """A trial reached ``state``; a sample when it was scored (completed or stopped);
        ``accuracy`` and ``reward`` go into the distributions (completed trials)."""
        self._parent.trials_finished.labels(self.search_id, state).inc()
        self._parent.trial_seconds.labels(self.search_id).observe(seconds)
        if state in ("completed", "stopped"):
            with self._lock:
                self._samples.append(self._clock())
        if accuracy is not None:
            self._parent.accuracy.labels(self.search_id).observe(accuracy)
        if reward is not None:
            self._parent.reward.labels(self.search_id).observe(reward)

    def ended(self) -> None:
        """The search reached a final state: no more samples per hour."""
        with self._lock:
            self._ended = True
        self._parent.prune_ended()

    @property
    def is_ended(self) -> bool:
        with self._lock:
            return self._ended

    def remove(self) -> None:
        """Drop this search's series from every family."""
        p = self._parent
        for family in (
            p.trials_running,
            p.trials_done,
            p.best_reward,
            p.best_accuracy,
            p.best_latency,
            p.budget_trials,
            p.budget_failed_trials,
            p.trial_seconds,
            p.accuracy,
            p.reward,
        ):
            _remove(family, self.search_id)
        for state in ("completed", "stopped", "failed", "cancelled"):
            _remove(p.trials_finished, self.search_id, state)
        for kind in RETRY_KINDS:
            _remove(p.trial_retries, self.search_id, kind)
        for phase in PHASES:
            _remove(p.trial_phase_seconds, self.search_id, phase)

    def samples_per_hour(self) -> float:
        """Samples in the last :data:`SAMPLES_WINDOW_SECONDS`, per hour (over the time since
        the search started in this process while that is shorter); 0 once it ended."""
        now = self._clock()
        with self._lock:
            if self._ended:
                return 0.0
            while self._samples and self._samples[0] <= now - SAMPLES_WINDOW_SECONDS:
                self._samples.popleft()
            count = len(self._samples)
        span = min(SAMPLES_WINDOW_SECONDS, max(now - self._started, MIN_SAMPLES_SPAN_SECONDS))
        return count * _HOUR / span


class ControllerMetrics:
    """``clock``: monotonic seconds, for the samples-per-hour window."""

    def __init__(
        self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self._registry = registry
        self._lock = threading.Lock()
        self._searches: dict[str, SearchMetrics] = {}
        self._pools: list[WorkerPool] = []
        self.trials_finished = Counter(
            "mnas_search_trials_finished_total",
            "Trials that reached a final state, by search and state (completed, stopped, "
            "failed, cancelled); completed and stopped ones are the samples.",
            ("search", "state"),
            registry=registry,
        )
        self.trials_running = Gauge(
            "mnas_search_trials_running",
            "Trials being measured, trained or scored now, by search.",
            ("search",),
            registry=registry,
        )
        self.trials_done = Gauge(
            "mnas_search_trials_done",
            "Trials completed or stopped so far (the search's progress against its budget), "
            "by search; read from the search's record, so it survives a controller restart.",
            ("search",),
            registry=registry,
        )
        self.best_reward = Gauge(
            "mnas_search_best_reward",
            "Reward of the best completed trial so far, by search.",
            ("search",),
            registry=registry,
        )
        self.best_accuracy = Gauge(
            "mnas_search_best_accuracy",
            "Accuracy (0-1) of the best completed trial so far, by search.",
            ("search",),
            registry=registry,
        )
        self.best_latency = Gauge(
            "mnas_search_best_latency_seconds",
            "Latency of the best completed trial so far, by search.",
            ("search",),
            registry=registry,
        )
        self.budget_trials = Gauge(
            "mnas_search_budget_trials",
            "Trials the search runs to (budget.max_trials), by search.",
            ("search",),
            registry=registry,
        )
        self.budget_failed_trials = Gauge(
            "mnas_search_budget_failed_trials",
            "Failed trials the search tolerates (budget.max_failed_trials), by search.",
            ("search",),
            registry=registry,
        )
        self.trial_retries = Counter(
            "mnas_search_trial_retries_total",
            "Trial steps tried again after a worker failed, by search and the kind of worker "
            "(latency, trainer, reward).",
            ("search", "kind"),
            registry=registry,
        )
        self.trial_seconds = Histogram(
            "mnas_search_trial_seconds",
            "Wall time of a trial, start to final state, by search.",
            ("search",),
            buckets=_TRIAL_BUCKETS,
            registry=registry,
        )
        self.trial_phase_seconds = Histogram(
            "mnas_search_trial_phase_seconds",
            "Time of one phase of a trial attempt (queued for a worker slot, measuring, "
            "training, scoring), by search and phase.",
            ("search", "phase"),
            buckets=_PHASE_BUCKETS,
            registry=registry,
        )
        self.accuracy = Histogram(
            "mnas_search_accuracy",
            "Accuracy (0-1) of the completed trials, by search.",
            ("search",),
            buckets=_ACCURACY_BUCKETS,
            registry=registry,
        )
        self.reward = Histogram(
            "mnas_search_reward",
            "Reward of the completed trials (negative ones in le=0), by search.",
            ("search",),
            buckets=_REWARD_BUCKETS,
            registry=registry,
        )
        self.trial_attempts = Counter(
            "mnas_controller_trial_attempts_total",
            "Dispatches of trials to workers, by outcome.",
            ("kind", "outcome"),
            registry=registry,
        )
        self.model_latency = Histogram(
            "mnas_controller_model_latency_seconds",
            "Median latency of the sampled models, by device class.",
            ("device_class",),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.searches = Gauge(
            "mnas_controller_searches",
            "Searches by state.",
            ("state",),
            registry=registry,
        )
        registry.register(_ScrapeTimeCollector(self))

    def search(self, search_id: str) -> SearchMetrics:
        """The series of one search, made on first use."""
        with self._lock:
            found = self._searches.get(search_id)
            if found is None:
                found = self._searches[search_id] = SearchMetrics(self, search_id)
            return found

    def prune_ended(self) -> None:
        """Remove the series of ended searches beyond the newest :data:`ENDED_SEARCHES_KEPT`."""
        with self._lock:
            ended = [s for s in self._searches.values() if s.is_ended]
            stale = ended[: max(0, len(ended) - ENDED_SEARCHES_KEPT)]  # dicts keep order
            for search in stale:
                del self._searches[search.search_id]
        for search in stale:
            search.remove()

    def track_workers(self, pools: Sequence[WorkerPool]) -> None:
        """Report these pools' endpoints at every scrape."""
        with self._lock:
            self._pools.extend(pools)

    def _snapshot(self) -> tuple[list[SearchMetrics], list[WorkerPool]]:
        with self._lock:
            return list(self._searches.values()), list(self._pools)


def _remove(family: Counter | Gauge | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # a series never made
        family.remove(*labels)


class _ScrapeTimeCollector(Collector):
    """Samples per hour over the sliding window, and the worker pools as they stand."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        self._m = metrics

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        searches, pools = self._m._snapshot()
        families = self._families()
        per_hour, capacity, in_use, healthy = families
        for search in searches:
            per_hour.add_metric([search.search_id], search.samples_per_hour())
        for pool in pools:
            for endpoint in pool.snapshot():
                labels = [pool.kind, endpoint.address]
                capacity.add_metric(labels, endpoint.capacity if endpoint.healthy else 0)
                in_use.add_metric(labels, endpoint.in_use)
                healthy.add_metric(labels, 1 if endpoint.healthy else 0)
        yield from families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        endpoint = ["kind", "endpoint"]
        return [
            GaugeMetricFamily(
                "mnas_search_samples_per_hour",
                "Trials completed or stopped in the last 15 minutes (or since the search "
                "started here, when shorter), per hour, by search; 0 once it ended.",
                labels=["search"],
            ),
            GaugeMetricFamily(
                "mnas_worker_capacity",
                "Jobs a worker endpoint takes at once (0 while it is unreachable), by kind "
                "(trainer, latency) and endpoint.",
                labels=endpoint,
            ),
            GaugeMetricFamily(
                "mnas_worker_slots_in_use",
                "Jobs the controller has running on a worker endpoint, by kind and endpoint.",
                labels=endpoint,
            ),
            GaugeMetricFamily(
                "mnas_worker_healthy",
                "1 while a worker endpoint answers, 0 while it is benched, by kind and endpoint.",
                labels=endpoint,
            ),
        ]

"""The controller's Prometheus metrics, registered in a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ControllerMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2)
_TRIAL_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.trials_finished = Counter(
            "mnas_controller_trials_finished_total",
            "Trials that reached a final state (rate over 1h: samples per hour).",
            ("state",),
            registry=registry,
        )
        self.trials_running = Gauge(
            "mnas_controller_trials_running",
            "Trials being measured or trained now.",
            registry=registry,
        )
        self.trial_attempts = Counter(
            "mnas_controller_trial_attempts_total",
            "Dispatches of trials to workers, by outcome.",
            ("kind", "outcome"),
            registry=registry,
        )
        self.trial_seconds = Histogram(
            "mnas_controller_trial_seconds",
            "Wall time of a trial, start to final state.",
            buckets=_TRIAL_BUCKETS,
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

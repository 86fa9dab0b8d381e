"""The trainer's job metrics: trainings running and ended, their wall time, examples seen."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["TrainerMetrics"]

_JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class TrainerMetrics:
    """The trainer's job metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "mnas_trainer_jobs_in_flight", "Trainings running now.", registry=registry
        )
        self.jobs = Counter(
            "mnas_trainer_jobs_total",
            "Trainings ended, by outcome.",
            ("outcome",),
            registry=registry,
        )
        self.seconds = Histogram(
            "mnas_trainer_job_seconds",
            "Wall time of a training, whatever its outcome.",
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
        self.samples = Counter(
            "mnas_trainer_samples_total", "Training examples processed.", registry=registry
        )
        for outcome in ("completed", "failed", "cancelled"):
            self.jobs.labels(outcome)

"""What the SDK returns: searches, trials, their latency, the reference network and watch
events, as frozen dataclasses with named fields and string enums.

Each object keeps the message it was read from as ``proto`` (not part of equality or of
``to_dict()``), for the fields it does not name; ``to_dict()`` gives plain JSON types.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from mnas.arch import Architecture, decode
from mnas.build import BuildParams
from mnas.latency import is_predicted, reported_seconds
from mnas.v1 import common_pb2, controller_pb2

__all__ = [
    "EventKind",
    "Latency",
    "LatencyFigure",
    "Reference",
    "ReferenceState",
    "SearchEvent",
    "SearchInfo",
    "SearchState",
    "StrategyStatus",
    "Trial",
    "TrialState",
]

E = TypeVar("E", bound="_ProtoEnum")


class _ProtoEnum(enum.StrEnum):
    """A protobuf enum by its lowercase name without the prefix (``SEARCH_STATE_FAILED``
    is ``"failed"``); a number this client does not know reads as ``unspecified``."""

    @classmethod
    def _read(cls: type[E], name_of: Callable[[Any], str], prefix: str, number: int) -> E:
        try:
            name = name_of(number)
        except ValueError:  # a newer controller's value
            return cls("unspecified")
        return cls(name.removeprefix(prefix).lower())


class SearchState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def from_proto(cls, number: int) -> SearchState:
        return cls._read(common_pb2.SearchState.Name, "SEARCH_STATE_", number)

    @property
    def finished(self) -> bool:
        """Whether the search has ended (succeeded, failed or cancelled)."""
        return self in (SearchState.SUCCEEDED, SearchState.FAILED, SearchState.CANCELLED)


class TrialState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # stopped early (early_stopping), scored with its last accuracy

    @classmethod
    def from_proto(cls, number: int) -> TrialState:
        return cls._read(common_pb2.TrialState.Name, "TRIAL_STATE_", number)

    @property
    def scored(self) -> bool:
        """Whether the trial has a reward: completed, or stopped early."""
        return self in (TrialState.COMPLETED, TrialState.STOPPED)

    @property
    def finished(self) -> bool:
        return self not in (TrialState.UNSPECIFIED, TrialState.PENDING, TrialState.RUNNING)


class ReferenceState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    PENDING = "pending"
    MEASURED = "measured"
    FAILED = "failed"

    @classmethod
    def from_proto(cls, number: int) -> ReferenceState:
        return cls._read(common_pb2.ReferenceState.Name, "REFERENCE_STATE_", number)


class EventKind(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    SNAPSHOT = "snapshot"  # the search as it stood when watching began
    TRIAL_STARTED = "trial_started"
    TRIAL_FINISHED = "trial_finished"  # completed, stopped or failed for good
    TRIAL_RETRIED = "trial_retried"
    SEARCH_FINISHED = "search_finished"

    @classmethod
    def from_proto(cls, number: int) -> EventKind:
        return cls._read(controller_pb2.EventKind.Name, "EVENT_KIND_", number)


class LatencyFigure(enum.StrEnum):
    """Which statistic of the timed runs a latency is: the robust figure (the mean of the
    fastest runs, normalized by the machine's speed where the oracle can), or the median
    from a latency service that reports no robust figure."""

    ROBUST = "robust"
    MEDIAN = "median"


class _Plain:
    """``to_dict()``: the fields as JSON types, without ``proto``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name != "proto"
        }


def _plain(value: object) -> Any:
    if isinstance(value, _Plain | BuildParams):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, common_pb2.SearchSpec):
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    return value


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    stamp: Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class Latency(_Plain):
    """A trial's measured latency: ``seconds`` is the figure its reward used."""

    seconds: float
    figure: LatencyFigure
    device_class: str
    device: str
    median_seconds: float
    min_seconds: float
    p90_seconds: float
    mean_seconds: float
    proto: common_pb2.LatencyStats = field(repr=False, compare=False)

    @property
    def predicted(self) -> bool:
        """Whether a calibrated predictor gave it, not a device."""
        return is_predicted(self.device_class)

    @classmethod
    def from_proto(cls, message: common_pb2.LatencyStats) -> Latency:
        robust = bool(message.robust_seconds)
        return cls(
            seconds=reported_seconds(message),
            figure=LatencyFigure.ROBUST if robust else LatencyFigure.MEDIAN,
            device_class=message.device_class,
            device=message.device,
            median_seconds=message.median_seconds,
            min_seconds=message.min_seconds,
            p90_seconds=message.p90_seconds,
            mean_seconds=message.mean_seconds,
            proto=message,
        )


@dataclass(frozen=True)
class Trial(_Plain):
    """One trial of a search. ``accuracy`` is the held-out accuracy on the proxy task (the
    last one reached for a trial stopped early), None before its training finished;
    ``reward`` is None unless the trial is completed or stopped early."""

    search_id: str
    number: int
    state: TrialState
    architecture: str  # the canonical form: stem, block strings, head and settings
    architecture_id: str
    blocks: str  # the block strings alone, as the official MnasNet code writes them
    accuracy: float | None
    loss: float | None
    latency: Latency | None
    reward: float | None
    attempts: int
    error: str
    trainer: str
    latency_worker: str
    stopped_at_step: int | None
    total_steps: int
    has_weights: bool  # the store keeps its trained weights (budget.keep_weights)
    duplicate_of: int | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    proto: common_pb2.Trial = field(repr=False, compare=False)

    @property
    def latency_seconds(self) -> float | None:
        """The latency its reward used (see ``latency.figure``), None before it is measured."""
        return self.latency.seconds if self.latency is not None else None

    def arch(self) -> Architecture:
        """The decoded architecture (for :func:`mnas.build_model`, cost counting...)."""
        return decode(self.architecture)

    def to_row(self) -> dict[str, Any]:
        """One flat row of plain values, keyed by :meth:`columns`: ``latency`` is split
        into ``latency_seconds``, ``latency_figure`` and ``device_class``."""
        values = self.to_dict()
        latency = values["latency"] or {}
        values |= {
            "latency_seconds": latency.get("seconds"),
            "latency_figure": latency.get("figure"),
            "device_class": latency.get("device_class"),
        }
        return {name: values[name] for name in self.columns()}

    @classmethod
    def columns(cls) -> list[str]:
        """The keys of :meth:`to_row`, in order."""
        names: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name == "latency":
                names += ["latency_seconds", "latency_figure", "device_class"]
            elif f.name != "proto":
                names.append(f.name)
        return names

    @classmethod
    def from_proto(cls, message: common_pb2.Trial) -> Trial:
        state = TrialState.from_proto(message.state)
        canonical = message.architecture.canonical
        trained = message.HasField("training")
        return cls(
            search_id=message.search_id,
            number=message.number,
            state=state,
            architecture=canonical,
            architecture_id=message.architecture.id,
            blocks=" ".join(t for t in canonical.split() if ":" not in t),  # no settings
            accuracy=message.training.accuracy if trained else None,
            loss=message.training.loss if trained else None,
            latency=Latency.from_proto(message.latency) if message.HasField("latency") else None,
            reward=message.reward if state.scored else None,
            attempts=message.attempts,
            error=message.error,
            trainer=message.trainer,
            latency_worker=message.latency_worker,
            stopped_at_step=message.stopped_at_step or None,
            total_steps=message.total_steps,
            has_weights=message.has_weights,
            duplicate_of=message.duplicate_of if message.HasField("duplicate_of") else None,
            created_at=_time(message, "created_at"),
            started_at=_time(message, "started_at"),
            finished_at=_time(message, "finished_at"),
            proto=message,
        )


@dataclass(frozen=True)
class Reference(_Plain):
    """The known network a search trains once beside its trials (``spec.reference``), so
    its trials' accuracies can be read against it; ``accuracy`` once measured."""

    name: str
    architecture: str
    state: ReferenceState
    accuracy: float | None
    error: str
    trainer: str
    attempts: int
    proto: common_pb2.Reference = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: common_pb2.Reference) -> Reference:
        state = ReferenceState.from_proto(message.state)
        return cls(
            name=message.name,
            architecture=message.architecture.canonical,
            state=state,
            accuracy=message.training.accuracy if state is ReferenceState.MEASURED else None,
            error=message.error,
            trainer=message.trainer,
            attempts=message.attempts,
            proto=message,
        )


@dataclass(frozen=True)
class StrategyStatus(_Plain):
    """How far the search's strategy has learned: the trials it has observed, the updates
    it made (PPO), its sampling entropy and the log-probability it gives the space's
    reference network, where the strategy reports them."""

    observed: int
    updates: int
    entropy: float | None
    reference_log_prob: float | None
    proto: common_pb2.StrategyStatus = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: common_pb2.StrategyStatus) -> StrategyStatus:
        return cls(
            observed=message.observed,
            updates=message.updates,
            entropy=message.entropy if message.HasField("entropy") else None,
            reference_log_prob=(
                message.reference_log_prob if message.HasField("reference_log_prob") else None
            ),
            proto=message,
        )


@dataclass(frozen=True)
class SearchInfo(_Plain):
    """A search as the controller last reported it. ``spec`` is the spec as the controller
    completed it (every default written in); ``best_trial`` and ``best_reward`` are None
    until a trial has completed."""

    id: str
    name: str
    state: SearchState
    owner: str
    max_trials: int
    trials_completed: int
    trials_stopped: int
    trials_failed: int
    trials_running: int
    best_trial: int | None
    best_reward: float | None
    error: str
    reference: Reference | None
    strategy_status: StrategyStatus
    created_at: datetime | None
    finished_at: datetime | None
    spec: common_pb2.SearchSpec = field(repr=False, hash=False)
    proto: common_pb2.Search = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def build(self) -> BuildParams:
        """The build parameters of its trials (classes, resolution, width)."""
        return BuildParams.from_spec(self.spec)

    @classmethod
    def from_proto(cls, message: common_pb2.Search) -> SearchInfo:
        scored = message.trials_completed > 0
        return cls(
            id=message.id,
            name=message.spec.name,
            state=SearchState.from_proto(message.state),
            owner=message.owner,
            max_trials=message.spec.budget.max_trials,
            trials_completed=message.trials_completed,
            trials_stopped=message.trials_stopped,
            trials_failed=message.trials_failed,
            trials_running=message.trials_running,
            best_trial=message.best_trial if scored else None,
            best_reward=message.best_reward if scored else None,
            error=message.error,
            reference=(
                Reference.from_proto(message.reference) if message.HasField("reference") else None
            ),
            strategy_status=StrategyStatus.from_proto(message.strategy_status),
            created_at=_time(message, "created_at"),
            finished_at=_time(message, "finished_at"),
            spec=message.spec,
            proto=message,
        )


@dataclass(frozen=True)
class SearchEvent(_Plain):
    """One event of :meth:`mnas.client.Search.watch`: what happened, the search as it
    stands after it, and the trial it concerns (None for snapshots and the end)."""

    kind: EventKind
    search: SearchInfo
    trial: Trial | None
    proto: controller_pb2.WatchSearchResponse = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: controller_pb2.WatchSearchResponse) -> SearchEvent:
        return cls(
            kind=EventKind.from_proto(message.kind),
            search=SearchInfo.from_proto(message.search),
            trial=Trial.from_proto(message.trial) if message.HasField("trial") else None,
            proto=message,
        )

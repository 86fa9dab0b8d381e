"""The ``status`` of a MnasSearch: its state, counters, best trial and conditions.

Pure functions of the controller's view of the search: the reconciler writes what they
return. Conditions follow the Kubernetes API conventions (type, status, reason, message,
lastTransitionTime, observedGeneration); a condition's lastTransitionTime only moves when
its status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnas.latency import reported_seconds
from mnas.v1 import common_pb2

__all__ = [
    "CONDITION_TYPES",
    "TERMINAL_STATES",
    "Condition",
    "best_trial",
    "failed_status",
    "merge_conditions",
    "pending_status",
    "search_status",
    "state_name",
]

Status = dict[str, Any]

CONDITION_TYPES = ("Created", "Running", "Succeeded", "Failed")
TERMINAL_STATES = frozenset({"Succeeded", "Failed", "Cancelled"})

SS = common_pb2.SearchState
_STATES: dict[int, str] = {
    SS.SEARCH_STATE_RUNNING: "Running",
    SS.SEARCH_STATE_SUCCEEDED: "Succeeded",
    SS.SEARCH_STATE_FAILED: "Failed",
    SS.SEARCH_STATE_CANCELLED: "Cancelled",
}


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def state_name(state: int) -> str:
    """The ``status.state`` of a controller's ``SearchState``."""
    return _STATES.get(state, "Pending")


def merge_conditions(
    current: Sequence[Mapping[str, Any]],
    wanted: Sequence[Condition],
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """``wanted`` as condition dicts, keeping each one's lastTransitionTime from
    ``current`` while its status stays the same."""
    before = {str(c.get("type")): c for c in current}
    merged = []
    for condition in wanted:
        status = "True" if condition.status else "False"
        old = before.get(condition.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged


def best_trial(trial: common_pb2.Trial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "accuracy": trial.training.accuracy,
        "latencySeconds": reported_seconds(trial.latency),
        "reward": trial.reward,
        "architecture": trial.architecture.canonical,
        "architectureId": trial.architecture.id,
    }


def _conditions_for(state: str, error: str) -> list[Condition]:
    created = Condition("Created", True, "Submitted", "the controller accepted the search")
    if state == "Running":
        return [
            created,
            Condition("Running", True, "TrialsRunning", "the search is running"),
            Condition("Succeeded", False, "Running"),
            Condition("Failed", False, "Running"),
        ]
    if state == "Succeeded":
        return [
            created,
            Condition("Running", False, "Finished"),
            Condition("Succeeded", True, "BudgetSpent", "every budgeted trial finished"),
            Condition("Failed", False, "Succeeded"),
        ]
    reason = "Cancelled" if state == "Cancelled" else "SearchFailed"
    return [
        created,
        Condition("Running", False, "Finished"),
        Condition("Succeeded", False, reason),
        Condition("Failed", True, reason, error or f"the search was {state.lower()}"),
    ]


def search_status(
    current: Mapping[str, Any],
    search: common_pb2.Search,
    best: Mapping[str, Any] | None,
    *,
    generation: int | None,
    now: str,
) -> Status:
    """The status of a submitted search as the controller reports it."""
    state = state_name(search.state)
    budget = search.spec.budget.max_trials
    done = search.trials_completed + search.trials_stopped
    status: Status = {
        "state": state,
        "searchId": search.id,
        "progress": f"{done}/{budget}",
        "message": search.error,
        "budget": budget,
        "trials": done + search.trials_failed + search.trials_running,
        "running": search.trials_running,
        "completed": search.trials_completed,
        "failed": search.trials_failed,
        "stopped": search.trials_stopped,
        "conditions": merge_conditions(
            current.get("conditions") or [],
            _conditions_for(state, search.error),
            generation=generation,
            now=now,
        ),
    }
    if best is not None:
        status["bestTrial"] = dict(best)
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def pending_status(
    current: Mapping[str, Any], reason: str, message: str, *, generation: int | None, now: str
) -> Status:
    """Not submitted yet (the controller could not be reached): Created is False."""
    status: Status = {
        "state": "Pending",
        "message": message,
        "conditions": merge_conditions(
            current.get("conditions") or [],
            [Condition("Created", False, reason, message)],
            generation=generation,
            now=now,
        ),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def failed_status(
    current: Mapping[str, Any], reason: str, message: str, *, generation: int | None, now: str
) -> Status:
    """Never submitted, for good (the controller refused the spec): Failed is True."""
    status: Status = {
        "state": "Failed",
        "message": message,
        "conditions": merge_conditions(
            current.get("conditions") or [],
            [
                Condition("Created", False, reason, message),
                Condition("Running", False, reason),
                Condition("Succeeded", False, reason),
                Condition("Failed", True, reason, message),
            ],
            generation=generation,
            now=now,
        ),
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status

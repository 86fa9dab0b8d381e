"""The reconciler against an in-memory controller and API (fakes recording the calls made):
one step at a time, without a cluster or gRPC."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from mnas.v1 import common_pb2
from services.operator.reconcile import (
    AlreadyExists,
    ControllerUnavailable,
    Reconciler,
    Rejected,
    SearchGone,
)
from services.operator.resource import FINALIZER, search_id_for

UID = "0b9c6f7e-1d2a-4c3b-9e8f-7a6b5c4d3e2f"
SS = common_pb2.SearchState


class FakeController:
    """A controller keeping searches by id; refuses a second submission of an id."""

    def __init__(self) -> None:
        self.searches: dict[str, common_pb2.Search] = {}
        self.trials: dict[tuple[str, int], common_pb2.Trial] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.refuse: str | None = None
        self.down = False

    def submit(self, spec: common_pb2.SearchSpec, search_id: str) -> common_pb2.Search:
        if self.down:
            raise ControllerUnavailable("down")
        if self.refuse:
            raise Rejected(self.refuse)
        if search_id in self.searches:
            raise AlreadyExists(search_id)
        self.submitted.append(search_id)
        self.searches[search_id] = common_pb2.Search(
            id=search_id, spec=spec, state=SS.SEARCH_STATE_RUNNING
        )
        return self.searches[search_id]

    def get(self, search_id: str) -> common_pb2.Search:
        if search_id not in self.searches:
            raise SearchGone(search_id)
        return self.searches[search_id]

    def trial(self, search_id: str, number: int) -> common_pb2.Trial | None:
        return self.trials.get((search_id, number))

    def cancel(self, search_id: str) -> common_pb2.Search:
        search = self.get(search_id)
        self.cancelled.append(search_id)
        if search.state == SS.SEARCH_STATE_RUNNING:
            search.state = SS.SEARCH_STATE_CANCELLED
        return search


class FakeKube:
    """One object; patches merge into it as the API server's merge patch would."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.status_patches.append(dict(status))
        self.obj.setdefault("status", {}).update(copy.deepcopy(dict(status)))

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> None:
        self.obj["metadata"]["finalizers"] = list(finalizers)

    def event(self, obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason))


def mnas_search(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mnas.dev/v1alpha1",
        "kind": "MnasSearch",
        "metadata": {"name": "s", "namespace": "mnas", "uid": UID, "generation": 1},
        "spec": {"name": "s", "budget": {"max_trials": 4}, **spec},
    }


@pytest.fixture
def world() -> tuple[FakeController, FakeKube, Reconciler]:
    controller, kube = FakeController(), FakeKube(mnas_search())
    return controller, kube, Reconciler(controller, kube, clock=lambda: "2025-01-01T00:00:00Z")


World = tuple[FakeController, FakeKube, Reconciler]


def conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def test_first_pass_adds_the_finalizer_submits_under_the_uid_and_reports_running(
    world: World,
) -> None:
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["metadata"]["finalizers"] == [FINALIZER]
    assert controller.submitted == [search_id_for(UID)] == [f"k8s-{UID}"]
    status = kube.obj["status"]
    assert status["state"] == "Running"
    assert status["searchId"] == f"k8s-{UID}"
    assert status["progress"] == "0/4"
    assert conditions(kube.obj) == {
        "Created": "True",
        "Running": "True",
        "Succeeded": "False",
        "Failed": "False",
    }
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert kube.events == [("Normal", "Submitted")]


def test_passes_after_the_first_never_submit_again(world: World) -> None:
    controller, kube, reconciler = world
    for _ in range(3):
        reconciler.reconcile(copy.deepcopy(kube.obj))
    assert controller.submitted == [f"k8s-{UID}"]
    assert len(kube.status_patches) == 1  # nothing changed: nothing written


def test_lost_status_is_recovered_from_already_exists(world: World) -> None:
    """An operator that stopped between submitting and writing the status submits again on
    restart: the controller refuses the id, the reconciler follows the existing search."""
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    del kube.obj["status"]
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert controller.submitted == [f"k8s-{UID}"]
    assert kube.obj["status"]["state"] == "Running"


def test_progress_best_trial_and_success(world: World) -> None:
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    search = controller.searches[f"k8s-{UID}"]
    search.trials_completed, search.trials_stopped, search.trials_running = 2, 1, 1
    search.best_trial, search.best_reward = 1, 0.8
    trial = common_pb2.Trial(search_id=search.id, number=1, reward=0.8)
    trial.training.accuracy = 0.85
    trial.latency.robust_seconds = 0.002
    trial.architecture.canonical = "stem:32 head:1280"
    controller.trials[(search.id, 1)] = trial
    reconciler.reconcile(copy.deepcopy(kube.obj))
    status = kube.obj["status"]
    assert status["progress"] == "3/4"
    assert (status["trials"], status["completed"], status["stopped"]) == (4, 2, 1)
    assert status["bestTrial"] == {
        "number": 1,
        "accuracy": 0.85,
        "latencySeconds": 0.002,
        "reward": 0.8,
        "architecture": "stem:32 head:1280",
        "architectureId": "",
    }
    started = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    search.state = SS.SEARCH_STATE_SUCCEEDED
    search.trials_running = 0
    reconciler = Reconciler(controller, kube, clock=lambda: "2025-01-01T01:00:00Z")
    reconciler.reconcile(copy.deepcopy(kube.obj))
    status = kube.obj["status"]
    assert status["state"] == "Succeeded"
    assert conditions(kube.obj)["Succeeded"] == "True"
    assert conditions(kube.obj)["Running"] == "False"
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times["Created"] == started["Created"]  # unchanged condition keeps its time
    assert times["Succeeded"] == "2025-01-01T01:00:00Z"
    assert kube.events[-1] == ("Normal", "Succeeded")
    patches = len(kube.status_patches)
    reconciler.reconcile(copy.deepcopy(kube.obj))  # finished: nothing more to do
    assert len(kube.status_patches) == patches


def test_deletion_cancels_then_removes_the_finalizer(world: World) -> None:
    controller, kube, reconciler = world
    kube.obj["metadata"]["finalizers"] = ["someone.else/keep"]
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["metadata"]["finalizers"] == ["someone.else/keep", FINALIZER]
    kube.obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:05Z"
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert controller.cancelled == [f"k8s-{UID}"]
    assert controller.searches[f"k8s-{UID}"].state == SS.SEARCH_STATE_CANCELLED
    assert kube.obj["metadata"]["finalizers"] == ["someone.else/keep"]
    reconciler.reconcile(copy.deepcopy(kube.obj))  # our finalizer is gone: nothing to do
    assert controller.cancelled == [f"k8s-{UID}"]


def test_deletion_before_any_submission_just_releases(world: World) -> None:
    controller, kube, reconciler = world
    kube.obj["metadata"]["finalizers"] = [FINALIZER]
    kube.obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:05Z"
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert controller.submitted == [] and controller.cancelled == []
    assert kube.obj["metadata"]["finalizers"] == []


def test_deletion_waits_for_an_unreachable_controller(world: World) -> None:
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    kube.obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:05Z"

    def unreachable(search_id: str) -> common_pb2.Search:
        raise ControllerUnavailable("down")

    controller.cancel = unreachable  # type: ignore[method-assign]
    with pytest.raises(ControllerUnavailable):
        reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["metadata"]["finalizers"] == [FINALIZER]  # kept until cancelled


def test_refused_spec_fails_for_good(world: World) -> None:
    controller, kube, reconciler = world
    controller.refuse = "spec.budget.max_trials: must be positive"
    reconciler.reconcile(copy.deepcopy(kube.obj))
    status = kube.obj["status"]
    assert status["state"] == "Failed"
    assert "max_trials" in status["message"]
    assert conditions(kube.obj) == {
        "Created": "False",
        "Running": "False",
        "Succeeded": "False",
        "Failed": "True",
    }
    assert {c["reason"] for c in status["conditions"]} == {"InvalidSpec"}
    assert kube.events == [("Warning", "InvalidSpec")]
    controller.refuse = None
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert controller.submitted == []  # failed objects are not retried


def test_spec_the_proto_cannot_hold_fails_without_a_call(world: World) -> None:
    controller, kube, reconciler = world
    kube.obj["spec"]["budget"]["max_trails"] = 3
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Failed"
    assert "max_trails" in kube.obj["status"]["message"]
    assert controller.submitted == []


def test_unreachable_controller_leaves_it_pending_then_submits(world: World) -> None:
    controller, kube, reconciler = world
    controller.down = True
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Pending"
    assert kube.obj["status"]["conditions"][0]["reason"] == "ControllerUnavailable"
    controller.down = False
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Running"
    assert controller.submitted == [f"k8s-{UID}"]


def test_search_missing_from_the_controller_fails_the_object(world: World) -> None:
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    controller.searches.clear()
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Failed"
    assert kube.obj["status"]["conditions"][-1]["reason"] == "SearchNotFound"


def test_cancelled_elsewhere_is_failed_with_reason_cancelled(world: World) -> None:
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    controller.searches[f"k8s-{UID}"].state = SS.SEARCH_STATE_CANCELLED
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Cancelled"
    failed = next(c for c in kube.obj["status"]["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "Cancelled")


def test_search_id_is_stable_and_valid() -> None:
    assert search_id_for(UID) == search_id_for(UID.upper())
    assert len(search_id_for(UID)) <= 63
    with pytest.raises(ValueError):
        search_id_for("!!!")


def test_deleting_a_finished_object_needs_no_controller(world: World) -> None:
    """A finished search is not cancelled: the finalizer goes even with the controller
    gone (as when the whole install is deleted at once)."""
    controller, kube, reconciler = world
    reconciler.reconcile(copy.deepcopy(kube.obj))
    controller.searches[f"k8s-{UID}"].state = SS.SEARCH_STATE_SUCCEEDED
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Succeeded"
    kube.obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:05Z"

    def unreachable(search_id: str) -> common_pb2.Search:
        raise ControllerUnavailable("down")

    controller.cancel = unreachable  # type: ignore[method-assign]
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["metadata"]["finalizers"] == []
    assert ("Normal", "Cancelled") not in kube.events


@pytest.mark.parametrize(
    "refusal",
    [
        "spec.training.dataset: no trainer serves 'cifar10'; the trainers offer: fashion-mnist",
        "spec.latency.device_class: unknown device class 'pixel-1' (known: host-cpu)",
    ],
)
def test_a_refusal_about_what_workers_offer_waits_and_submits_later(
    world: World, refusal: str
) -> None:
    """Data sets and device classes are checked against the workers up now: the object
    stays Pending and is submitted once they offer what it needs."""
    controller, kube, reconciler = world
    controller.refuse = refusal
    reconciler.reconcile(copy.deepcopy(kube.obj))
    status = kube.obj["status"]
    assert status["state"] == "Pending"
    assert status["message"] == refusal
    assert status["conditions"][0]["reason"] == "WaitingForWorkers"
    controller.refuse = None
    reconciler.reconcile(copy.deepcopy(kube.obj))
    assert kube.obj["status"]["state"] == "Running"
    assert controller.submitted == [f"k8s-{UID}"]

"""The operator against PyPI's ``kmock`` Kubernetes API emulator on loopback, with a real
controller stack (controller, trainer, latency and reward processes) behind it.

kmock is an emulator, not a cluster: it keeps objects in memory and merges patches into
them, but assigns no uid, generation or creationTimestamp (the tests set them, as the API
server would), validates nothing against the CRD, has no PUT and ignores resourceVersion and
selectors. What runs for real: the operator's loop, the official ``kubernetes`` client's
list, watch and merge patches over HTTP, and the controller's searches.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import kmock
import pytest
import pytest_asyncio
from kubernetes import client
from prometheus_client import CollectorRegistry

from mnas.client import Client
from mnas.local import LocalStack
from mnas.results import SearchInfo, SearchState
from services.operator.controller import GrpcController
from services.operator.kube import KubeApi
from services.operator.loop import Operator, OperatorMetrics
from services.operator.reconcile import Reconciler
from services.operator.resource import FINALIZER, GROUP, PLURAL, VERSION

NAMESPACE = "mnas"
RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"
TIMEOUT = 120.0


def tiny_spec(name: str, trials: int, examples: int = 300) -> dict[str, Any]:
    return {
        "name": name,
        "seed": "3",
        "space": {"resolution": 28, "width": 0.5},
        "objective": {"kind": "OBJECTIVE_KIND_SOFT", "target_latency_seconds": 0.002},
        "budget": {"max_trials": trials, "parallel_trials": 1},
        "training": {
            "dataset": "fashion-mnist",
            "train_examples": examples,
            "validation_examples": 200,
            "epochs": 1,
            "batch_size": 32,
        },
        "latency": {"warmup_runs": 1, "runs": 2},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("stack")
    with LocalStack(workdir=workdir, store=str(workdir / "mnas.db"), trainers=1) as running:
        yield running


@pytest.fixture
def emulator(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    kmock.resources[RESOURCE] = kmock.ResourceInfo(
        kind="MnasSearch",
        singular="mnassearch",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    )
    kmock.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True)
    return kmock


def api_client(emulator: kmock.KubernetesEmulator) -> client.ApiClient:
    configuration = client.Configuration(host=str(emulator.servers[0].url).rstrip("/"))
    return client.ApiClient(configuration)


class Running:
    """An operator in this process, in threads, as ``python -m services.operator`` runs it."""

    def __init__(self, emulator: kmock.KubernetesEmulator, controller: str) -> None:
        self.kube = KubeApi(api_client(emulator), NAMESPACE, request_timeout=10)
        self.controller = GrpcController(controller)
        self.operator = Operator(
            self.kube,
            Reconciler(self.controller, self.kube),
            OperatorMetrics(CollectorRegistry()),
            poll_seconds=0.2,
            watch_seconds=2,
        ).start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.operator.stop)
        self.controller.close()


@pytest_asyncio.fixture
async def operators(
    emulator: kmock.KubernetesEmulator, stack: LocalStack
) -> AsyncIterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        started.append(Running(emulator, stack.controller))
        return started[-1]

    yield start
    for running in started:
        await running.stop()


async def create(emulator: kmock.KubernetesEmulator, name: str, spec: dict[str, Any]) -> str:
    """Create the object through the API, as ``kubectl apply`` would; returns its uid."""
    uid = str(uuid.uuid4())
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MnasSearch",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "generation": 1,
            "creationTimestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": spec,
    }
    api = client.CustomObjectsApi(api_client(emulator))
    await asyncio.to_thread(
        api.create_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, body
    )
    return uid


def current(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, Any] | None:
    for (resource, namespace, key), obj in emulator.objects.items():
        if (resource.plural, namespace, key) == (PLURAL, NAMESPACE, name) and not obj.deleted:
            return obj.raw
    return None


def state(emulator: kmock.KubernetesEmulator, name: str) -> str | None:
    obj = current(emulator, name)
    return None if obj is None else (obj.get("status") or {}).get("state")


async def until(
    condition: Callable[[], bool], what: str, obj: Callable[[], Any], timeout: float = TIMEOUT
) -> None:
    """Wait for ``condition`` (checked against the emulator's memory) up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the object: {obj()}")
        await asyncio.sleep(0.05)  # pacing the check; the emulator serves meanwhile


def searches_named(stack: LocalStack, name: str) -> list[SearchInfo]:
    with Client(stack.controller) as sdk:
        return [s for s in sdk.searches() if s.name == name]


@pytest.mark.asyncio
async def test_created_search_runs_to_success_with_its_best_trial(
    emulator: kmock.KubernetesEmulator, operators: Callable[[], Running], stack: LocalStack
) -> None:
    name = f"ok-{uuid.uuid4().hex[:6]}"
    operators()
    await create(emulator, name, tiny_spec(name, trials=2))
    await until(
        lambda: state(emulator, name) == "Running", "Running", lambda: current(emulator, name)
    )
    await until(
        lambda: state(emulator, name) == "Succeeded", "Succeeded", lambda: current(emulator, name)
    )
    obj = current(emulator, name)
    assert obj is not None
    status = obj["status"]
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    assert status["progress"] == "2/2"
    assert (status["completed"], status["failed"], status["trials"]) == (2, 0, 2)
    (search,) = searches_named(stack, name)
    assert status["searchId"] == search.id
    assert search.state is SearchState.SUCCEEDED
    best = status["bestTrial"]
    assert best["number"] == search.best_trial
    assert best["reward"] == pytest.approx(search.best_reward)
    assert 0.0 < best["accuracy"] <= 1.0 and best["latencySeconds"] > 0
    assert best["architecture"].startswith("stem:")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Running"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())

    def reasons() -> list[str]:
        return [
            obj.raw["reason"]
            for (res, _, _), obj in list(emulator.objects.items())
            if res.plural == "events" and not obj.deleted
        ]

    # The event follows the status patch that recorded the success.
    await until(lambda: "Succeeded" in reasons(), "a Succeeded event", reasons)
    assert "Submitted" in reasons()


@pytest.mark.asyncio
async def test_delete_cancels_the_search_and_releases_the_object(
    emulator: kmock.KubernetesEmulator, operators: Callable[[], Running], stack: LocalStack
) -> None:
    name = f"del-{uuid.uuid4().hex[:6]}"
    operators()
    await create(emulator, name, tiny_spec(name, trials=50, examples=2000))
    await until(
        lambda: state(emulator, name) == "Running", "Running", lambda: current(emulator, name)
    )
    api = client.CustomObjectsApi(api_client(emulator))
    await asyncio.to_thread(
        api.delete_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, name
    )
    await until(
        lambda: current(emulator, name) is None,
        "the object to go",
        lambda: current(emulator, name),
    )
    (search,) = searches_named(stack, name)
    assert search.state is SearchState.CANCELLED
    assert search.trials_completed < 50


@pytest.mark.asyncio
@pytest.mark.parametrize("status_lost", [False, True], ids=["status-kept", "status-lost"])
async def test_operator_restarted_mid_search_submits_nothing_twice(
    emulator: kmock.KubernetesEmulator,
    operators: Callable[[], Running],
    stack: LocalStack,
    status_lost: bool,
) -> None:
    """status-lost: the first operator stopped after submitting and before writing the
    status; the second finds the search by the id derived from the object's uid."""
    name = f"rs-{uuid.uuid4().hex[:6]}"
    first = operators()
    await create(emulator, name, tiny_spec(name, trials=2))
    await until(
        lambda: state(emulator, name) == "Running", "Running", lambda: current(emulator, name)
    )
    await first.stop()
    if status_lost:
        obj = emulator.objects[RESOURCE, NAMESPACE, name]
        del obj["status"]
    operators()
    await until(
        lambda: state(emulator, name) == "Succeeded", "Succeeded", lambda: current(emulator, name)
    )
    assert len(searches_named(stack, name)) == 1

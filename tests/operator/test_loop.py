"""The operator's loop: an object whose reconciliation fails waits out a back-off of its
own while the others go on (objects and reconciliation are scripted; no API server)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from services.operator.loop import MAX_BACKOFF, Operator, OperatorMetrics


class Objects:
    def __init__(self, *uids: str) -> None:
        self.objects = [
            {"metadata": {"uid": uid, "namespace": "mnas", "name": uid}} for uid in uids
        ]

    def list_objects(self) -> list[dict[str, Any]]:
        return self.objects

    def watch_objects(self, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        return iter(())

    def stop_watch(self) -> None:
        pass


class Reconciler:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.seen: list[str] = []

    def reconcile(self, obj: Mapping[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        self.seen.append(uid)
        if uid in self.failing:
            raise ConnectionError("controller unreachable")


def test_a_failing_object_backs_off_alone() -> None:
    now = [0.0]
    reconciler = Reconciler({"bad"})
    registry = CollectorRegistry()
    operator = Operator(
        Objects("bad", "good"),
        reconciler,  # type: ignore[arg-type]
        OperatorMetrics(registry),
        poll_seconds=5.0,
        clock=lambda: now[0],
    )
    assert operator.run_once() == 1
    assert reconciler.seen == ["bad", "good"]
    now[0] = 1.0  # within bad's 5 s back-off: only good is reconciled
    assert operator.run_once() == 0
    assert reconciler.seen[2:] == ["good"]
    now[0] = 5.0  # due again; fails again: the back-off doubles
    assert operator.run_once() == 1
    now[0] = 14.0
    operator.run_once()
    assert reconciler.seen[-1] == "good" and reconciler.seen.count("bad") == 2
    now[0] = 15.0
    operator.run_once()
    assert reconciler.seen.count("bad") == 3
    reconciler.failing.clear()
    now[0] = 15.0 + MAX_BACKOFF
    operator.run_once()
    operator.run_once()  # recovered: no back-off any more
    assert reconciler.seen.count("bad") == 5
    assert registry.get_sample_value("mnas_operator_reconciles_total", {"result": "error"}) == 3

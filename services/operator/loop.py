"""The operator's loop: reconcile every MnasSearch now, on each watch event, and every
``poll_seconds`` (searches progress without any change to their objects).

Two threads: a watcher that only wakes the worker, and the worker that lists the objects
and reconciles each in turn. An unreachable API server or controller is logged and tried
again; an object whose reconciliation failed is retried with a back-off of its own, so it
does not hold up the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from services.operator.reconcile import Reconciler

__all__ = ["Operator", "OperatorMetrics"]

_logger = logging.getLogger(__name__)

WATCH_SECONDS = 300
MAX_BACKOFF = 30.0


class Objects(Protocol):
    """The MnasSearch objects to reconcile (``kube.KubeApi``)."""

    def list_objects(self) -> list[dict[str, Any]]: ...

    def watch_objects(self, timeout_seconds: int) -> Iterator[dict[str, Any]]: ...

    def stop_watch(self) -> None: ...


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "mnas_operator_reconciles_total",
            "MnasSearch reconciliations, by result (ok, error).",
            ["result"],
            registry=registry,
        )
        self.list_errors = Counter(
            "mnas_operator_list_errors_total",
            "Failed listings or watches of MnasSearch objects.",
            registry=registry,
        )


class Operator:
    def __init__(
        self,
        objects: Objects,
        reconciler: Reconciler,
        metrics: OperatorMetrics,
        *,
        poll_seconds: float = 5.0,
        watch_seconds: int = WATCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = objects
        self._reconciler = reconciler
        self._metrics = metrics
        self._poll = poll_seconds
        self._watch_seconds = watch_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clock = clock
        # Objects whose last reconciliation failed: uid -> (when to try again, back-off).
        self._retry: dict[str, tuple[float, float]] = {}

    def start(self) -> Operator:
        for target, name in ((self._work, "operator"), (self._watch_loop, "operator-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0, watch_timeout: float = 2.0) -> None:
        """Finish the reconciliation under way, then stop. The watcher is waited for only
        ``watch_timeout`` seconds (it may be blocked reading until its request times
        out); a watcher that is retrying or logging ends in that time, so it does not
        hold stderr as the interpreter exits (which aborts the process)."""
        self._stop.set()
        self._wake.set()
        self._objects.stop_watch()
        self._threads[0].join(timeout)
        for thread in self._threads[1:]:
            thread.join(watch_timeout)

    def run_once(self) -> int:
        """List the objects and reconcile each that is not waiting out a back-off; how
        many failed."""
        failed = 0
        objects = self._objects.list_objects()
        now = self._clock()
        seen: set[str] = set()
        for obj in objects:
            if self._stop.is_set():
                break
            meta = obj.get("metadata") or {}
            uid = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
            seen.add(uid)
            due, backoff = self._retry.get(uid, (0.0, 0.0))
            if now < due:
                continue
            try:
                self._reconciler.reconcile(obj)
                self._metrics.reconciles.labels("ok").inc()
                self._retry.pop(uid, None)
            except Exception as err:
                failed += 1
                self._metrics.reconciles.labels("error").inc()
                backoff = min(MAX_BACKOFF, max(self._poll, 2 * backoff))
                self._retry[uid] = (now + backoff, backoff)
                _logger.warning(
                    "reconciling %s/%s failed (retry in %.0fs): %s",
                    meta.get("namespace"),
                    meta.get("name"),
                    backoff,
                    err,
                )
        for gone in set(self._retry) - seen:
            del self._retry[gone]
        return failed

    def _work(self) -> None:
        backoff = self._poll
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
                backoff = self._poll  # objects that failed wait out back-offs of their own
            except Exception as err:
                self._metrics.list_errors.inc()
                backoff = min(backoff * 2, MAX_BACKOFF)
                _logger.warning(
                    "listing MnasSearch objects failed (retry in %.0fs): %s", backoff, err
                )
            self._wake.wait(backoff)

    def _watch_loop(self) -> None:
        backoff = self._poll
        while not self._stop.is_set():
            try:
                for _event in self._objects.watch_objects(self._watch_seconds):
                    self._wake.set()
                    backoff = self._poll
                    if self._stop.is_set():
                        return
            except Exception as err:
                if self._stop.is_set():
                    return
                self._metrics.list_errors.inc()
                _logger.info("watch ended (restart in %.0fs): %s", backoff, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

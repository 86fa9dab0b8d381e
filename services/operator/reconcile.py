"""Reconcile one MnasSearch object with the controller: submit once, follow, cancel.

Level-triggered: :meth:`Reconciler.reconcile` looks at the object as it is now and does the
next step; calling it again with the same object is harmless. It knows neither gRPC nor the
Kubernetes client: both sit behind the small :class:`ControllerPort` and :class:`KubePort`
interfaces (``controller.py`` and ``kube.py`` implement them).

Exactly once: the search id is derived from the object's uid (``search_id_for``), the
finalizer is in place before the first submission, and a controller that already has a
search with that id answers ALREADY_EXISTS, which means "submitted before" (say, by an
operator that stopped before it could write the status).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mnas.specfile import spec_from_document
from mnas.v1 import common_pb2
from services.operator import status as st
from services.operator.resource import FINALIZER, search_id_for

__all__ = [
    "AlreadyExists",
    "ControllerPort",
    "ControllerUnavailable",
    "KubePort",
    "Reconciler",
    "Rejected",
    "SearchGone",
]

_logger = logging.getLogger(__name__)

Object = Mapping[str, Any]

# Spec fields the controller checks against what its workers report (the trainers' data
# sets, the latency services' device classes): a refusal there may pass later.
WORKER_FIELDS = ("spec.training.dataset:", "spec.latency.device_class:")


class AlreadyExists(Exception):
    """The controller already has a search with that id."""


class Rejected(ValueError):
    """The controller refused the spec; the message names the field."""


class SearchGone(LookupError):
    """The controller has no search with that id."""


class ControllerUnavailable(ConnectionError):
    """The controller could not be reached; try again later."""


class ControllerPort(Protocol):
    def submit(self, spec: common_pb2.SearchSpec, search_id: str) -> common_pb2.Search: ...

    def get(self, search_id: str) -> common_pb2.Search: ...

    def trial(self, search_id: str, number: int) -> common_pb2.Trial | None: ...

    def cancel(self, search_id: str) -> common_pb2.Search: ...


class KubePort(Protocol):
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> None: ...

    def event(self, obj: Object, kind: str, reason: str, message: str) -> None: ...


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_spec(spec: Mapping[str, Any]) -> common_pb2.SearchSpec:
    """The object's ``spec`` as a SearchSpec; ``Rejected`` says what is wrong."""
    try:
        return spec_from_document(dict(spec), source="spec")
    except ValueError as err:
        raise Rejected(str(err)) from None


class Reconciler:
    def __init__(
        self,
        controller: ControllerPort,
        kube: KubePort,
        *,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self._controller = controller
        self._kube = kube
        self._clock = clock

    def reconcile(self, obj: Object) -> None:
        """Do the next step for ``obj``; errors other than the ones handled here (API
        errors, an unreachable controller while cancelling) propagate: retry later."""
        meta = obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                finished = (obj.get("status") or {}).get("state") in st.TERMINAL_STATES
                if not finished:  # a finished search needs no cancel, nor the controller
                    self._cancel(obj)
                remaining = [f for f in finalizers if f != FINALIZER]
                self._kube.set_finalizers(
                    meta["namespace"], meta["name"], remaining, meta.get("resourceVersion")
                )
            return
        current = obj.get("status") or {}
        if current.get("state") in st.TERMINAL_STATES:
            return  # nothing changes any more; the finalizer stays for a later delete
        if FINALIZER not in finalizers:
            self._kube.set_finalizers(
                meta["namespace"],
                meta["name"],
                [*finalizers, FINALIZER],
                meta.get("resourceVersion"),
            )
        search = self._submitted(obj) if current.get("searchId") else self._submit(obj)
        if search is not None:
            self._follow(obj, search)

    # -- steps -----------------------------------------------------------------------

    def _search_id(self, obj: Object) -> str:
        status = obj.get("status") or {}
        return str(status.get("searchId") or search_id_for(obj["metadata"]["uid"]))

    def _cancel(self, obj: Object) -> None:
        search_id = self._search_id(obj)
        try:
            search = self._controller.cancel(search_id)
        except SearchGone:
            _logger.info("%s: deleted; search %s never existed", _key(obj), search_id)
            return
        state = st.state_name(search.state)
        _logger.info("%s: deleted; search %s is %s", _key(obj), search_id, state.lower())
        self._kube.event(obj, "Normal", "Cancelled", f"search {search_id} is {state.lower()}")

    def _submit(self, obj: Object) -> common_pb2.Search | None:
        search_id = search_id_for(obj["metadata"]["uid"])
        try:
            spec = parse_spec(obj.get("spec") or {})
            search = self._controller.submit(spec, search_id)
        except AlreadyExists:
            _logger.info("%s: search %s was submitted before", _key(obj), search_id)
            return self._controller.get(search_id)
        except Rejected as err:
            if str(err).startswith(WORKER_FIELDS):
                # Checked against what the workers offer now: a data set on a volume still
                # mounting, phones not attached yet. Wait and submit again.
                _logger.warning("%s: waiting for workers: %s", _key(obj), err)
                self._write(
                    obj,
                    st.pending_status(
                        obj.get("status") or {},
                        "WaitingForWorkers",
                        str(err),
                        generation=_generation(obj),
                        now=self._clock(),
                    ),
                )
                return None
            _logger.warning("%s: spec refused: %s", _key(obj), err)
            self._write(
                obj,
                st.failed_status(
                    obj.get("status") or {},
                    "InvalidSpec",
                    str(err),
                    generation=_generation(obj),
                    now=self._clock(),
                ),
            )
            self._kube.event(obj, "Warning", "InvalidSpec", str(err))
            return None
        except ControllerUnavailable as err:
            _logger.warning("%s: controller unavailable: %s", _key(obj), err)
            self._write(
                obj,
                st.pending_status(
                    obj.get("status") or {},
                    "ControllerUnavailable",
                    str(err),
                    generation=_generation(obj),
                    now=self._clock(),
                ),
            )
            return None
        _logger.info("%s: submitted as search %s", _key(obj), search.id)
        self._kube.event(obj, "Normal", "Submitted", f"submitted as search {search.id}")
        return search

    def _submitted(self, obj: Object) -> common_pb2.Search | None:
        search_id = self._search_id(obj)
        try:
            return self._controller.get(search_id)
        except SearchGone:
            message = f"the controller has no search {search_id} any more"
            _logger.warning("%s: %s", _key(obj), message)
            self._write(
                obj,
                st.failed_status(
                    obj.get("status") or {},
                    "SearchNotFound",
                    message,
                    generation=_generation(obj),
                    now=self._clock(),
                ),
            )
            self._kube.event(obj, "Warning", "SearchNotFound", message)
            return None

    def _follow(self, obj: Object, search: common_pb2.Search) -> None:
        current = obj.get("status") or {}
        best = current.get("bestTrial")
        if search.trials_completed > 0 and (best or {}).get("number") != search.best_trial:
            trial = self._controller.trial(search.id, search.best_trial)
            best = st.best_trial(trial) if trial is not None else best
        wanted = st.search_status(
            current, search, best, generation=_generation(obj), now=self._clock()
        )
        if self._write(obj, wanted) and wanted["state"] in st.TERMINAL_STATES:
            kind = "Normal" if wanted["state"] == "Succeeded" else "Warning"
            message = f"search {search.id} {wanted['state'].lower()}: {wanted['progress']} trials"
            if search.error:
                message += f": {search.error}"
            self._kube.event(obj, kind, wanted["state"], message)

    def _write(self, obj: Object, wanted: Mapping[str, Any]) -> bool:
        """Patch the status if it differs from the object's; whether it did."""
        current = obj.get("status") or {}
        if all(current.get(key) == value for key, value in wanted.items()):
            return False
        meta = obj["metadata"]
        self._kube.patch_status(meta["namespace"], meta["name"], wanted)
        return True


def _generation(obj: Object) -> int | None:
    generation = (obj.get("metadata") or {}).get("generation")
    return int(generation) if generation is not None else None


def _key(obj: Object) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"

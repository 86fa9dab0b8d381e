"""The controller's core: accepts specs, owns the running searches, answers queries.

It is the only writer of search state. On start it resumes every search the store says
is running: finished trials stay, unfinished ones are dispatched again.

Every query and command takes the ``user`` who asks (None when the controller checks no
tokens): a search submitted by a user is theirs, and one the user may not see answers as
if it did not exist (:class:`NotFound`), so its id tells nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator

from google.protobuf.timestamp import from_current_time as _now

from mnas.errors import InvalidInput
from mnas.v1 import common_pb2, controller_pb2
from services.controller.backends import Workers
from services.controller.events import EventHub
from services.controller.gate import DEFAULT_SLOTS, WorkGate
from services.controller.metrics import ControllerMetrics
from services.controller.runner import SearchRunner
from services.controller.spec import (
    ResolvedSpec,
    WorkersUnavailable,
    choose_dataset,
    resolve,
    stored_dataset,
)
from services.controller.store import AlreadyExistsError, Store
from services.controller.strategies import STRATEGIES
from services.controller.users import User, may_see

__all__ = ["AlreadyExists", "Controller", "NotFound", "ShuttingDown", "WorkersUnavailable"]

_logger = logging.getLogger(__name__)

SS = common_pb2.SearchState
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_SEARCH_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class NotFound(KeyError):
    """No search with that id."""


class AlreadyExists(Exception):
    """A search with the requested id exists already."""


class NoWeights(LookupError):
    """The store keeps no trained weights for that trial."""


class ShuttingDown(Exception):
    """The controller is stopping and takes no new search (another instance may)."""


class Controller:
    def __init__(
        self,
        store: Store,
        backends: Workers,
        metrics: ControllerMetrics,
        *,
        work_slots: int = DEFAULT_SLOTS,
    ) -> None:
        self._store = store
        self._backends = backends
        self._metrics = metrics
        metrics.track_workers([backends.trainers, backends.latency])
        self._hub = EventHub()
        self._gate = WorkGate(work_slots)  # shared by all searches' trial threads
        self._lock = threading.Condition()
        self._runners: dict[str, SearchRunner] = {}
        self._closing = False  # shutdown began: submissions are refused
        self._submitting = 0  # submissions past that check, not yet started

    # -- lifecycle -------------------------------------------------------------------

    def resume(self) -> int:
        """Restart every search the store holds as running; returns how many."""
        resumed = 0
        for search in self._store.list_searches():
            if search.state != SS.SEARCH_STATE_RUNNING:
                continue
            try:
                resolved = resolve(
                    search.spec,
                    dataset=stored_dataset(search.spec),
                    device_classes={search.spec.latency.device_class},
                    strategies=STRATEGIES,
                )
            except ValueError as err:
                search.state = SS.SEARCH_STATE_FAILED
                search.error = f"cannot resume: {err}"
                self._store.save(search=search)
                continue
            trials = self._all_trials(search.id)
            self._start(resolved, search, trials)
            resumed += 1
            _logger.info("resumed search %s with %d trials recorded", search.id, len(trials))
        self._update_search_gauge()
        return resumed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new searches, stop scheduling; the store keeps running searches
        running, to resume later. A submission that got in first is started (and so
        stopped with the rest): none is stored without being started. Every search's
        in-flight work is aborted at once and all of them get one shared ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            self._lock.wait_for(lambda: self._submitting == 0, timeout)
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
        self._backends.close()

    # -- commands --------------------------------------------------------------------

    def submit(
        self, spec: common_pb2.SearchSpec, search_id: str = "", *, user: User | None = None
    ) -> common_pb2.Search:
        """Validate ``spec`` (:class:`InvalidInput` names the field), store it, start it, as
        ``user``'s.

        ``search_id``: the id to give it (empty: a new random one); :class:`AlreadyExists`
        when a search has it, so a client retrying with the same id submits once. Ids are
        one namespace for all users: an id another user took is refused the same way.
        """
        if search_id and not _SEARCH_ID.match(search_id):
            raise InvalidInput(
                f"search_id: {search_id!r} must be 1-63 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        with self._lock:
            if self._closing:
                raise ShuttingDown("the controller is shutting down: submit again")
            self._submitting += 1
        try:
            return self._submit(spec, search_id, user)
        finally:
            with self._lock:
                self._submitting -= 1
                self._lock.notify_all()

    def _submit(
        self, spec: common_pb2.SearchSpec, search_id: str, user: User | None
    ) -> common_pb2.Search:
        if search_id and self._store.get_search(search_id) is not None:
            raise AlreadyExists(search_id)
        resolved = self._resolve(spec)
        search = common_pb2.Search(
            id=search_id or uuid.uuid4().hex[:12],
            spec=resolved.spec,
            state=SS.SEARCH_STATE_RUNNING,
            owner=user.name if user is not None else "",
        )
        search.created_at.CopyFrom(_now())
        try:
            self._store.create_search(search)
        except AlreadyExistsError:
            raise AlreadyExists(search.id) from None
        self._start(resolved, search, [])
        self._update_search_gauge()
        _logger.info(
            "search %s submitted (%s, %d trials)",
            search.id,
            spec.name or "unnamed",
            resolved.spec.budget.max_trials,
        )
        return search

    def cancel(self, search_id: str, *, user: User | None = None) -> common_pb2.Search:
        self.get(search_id, user=user)
        with self._lock:
            runner = self._runners.get(search_id)
        if runner is not None:
            runner.cancel()
            runner.join()
        return self.get(search_id)

    def wait(self, search_id: str, timeout: float | None = None) -> common_pb2.Search:
        """The search once it has finished, or as it stands after ``timeout`` seconds."""
        with self._lock:
            runner = self._runners.get(search_id)
        if runner is not None:
            runner.join(timeout)
        return self.get(search_id)

    # -- queries ---------------------------------------------------------------------

    def get(self, search_id: str, *, user: User | None = None) -> common_pb2.Search:
        with self._lock:
            runner = self._runners.get(search_id)
        search = runner.snapshot() if runner is not None else self._store.get_search(search_id)
        if search is None or not may_see(user, search.owner):
            raise NotFound(search_id)
        return search

    def list_searches(self, *, user: User | None = None) -> list[common_pb2.Search]:
        """Every search ``user`` may see, newest first; running ones as they stand in
        memory."""
        with self._lock:
            runners = dict(self._runners)
        return [
            runners[s.id].snapshot() if s.id in runners else s
            for s in self._store.list_searches()
            if may_see(user, s.owner)
        ]

    def trials(
        self, search_id: str, *, page_size: int = 0, page_token: str = "", user: User | None = None
    ) -> tuple[list[common_pb2.Trial], str]:
        """A page of trials by number, and the token of the next page ("" at the end)."""
        self.get(search_id, user=user)
        size = DEFAULT_PAGE if page_size <= 0 else min(page_size, MAX_PAGE)
        if page_token and not page_token.lstrip("-").isdigit():
            raise InvalidInput(f"page_token: malformed {page_token!r}")
        after = int(page_token) if page_token else -1
        page = self._store.list_trials(search_id, after=after, limit=size + 1)
        more = len(page) > size
        page = page[:size]
        return page, (str(page[-1].number) if more and page else "")

    def weights(self, search_id: str, number: int, *, user: User | None = None) -> bytes:
        """The trained weights kept for trial ``number`` (``torch.save`` bytes)."""
        search = self.get(search_id, user=user)
        data = self._store.load_weights(search_id, number)
        if data is None:
            kept = search.spec.budget.keep_weights
            raise NoWeights(
                f"no weights kept for trial {number} of search {search_id!r} "
                f"(budget.keep_weights keeps the best {kept} completed trials)"
            )
        return data

    def watch(
        self, search_id: str, *, active: threading.Event | None = None, user: User | None = None
    ) -> Iterator[controller_pb2.WatchSearchResponse]:
        """A snapshot, then events until the search finishes (or ``active`` is cleared)."""
        with self._hub.subscribe(search_id) as subscription:
            snapshot = self.get(search_id, user=user)
            yield controller_pb2.WatchSearchResponse(
                kind=controller_pb2.EVENT_KIND_SNAPSHOT, search=snapshot
            )
            if snapshot.state != SS.SEARCH_STATE_RUNNING:
                return
            while active is None or active.is_set():
                event = subscription.get(timeout=0.5)
                if event is None:
                    final = self.get(search_id)
                    if final.state == SS.SEARCH_STATE_RUNNING:
                        continue
                    # It ended between two polls. The runner saves the final record
                    # before it publishes the finish, so the finish may not be queued
                    # yet: send what is, then the finish made from the record.
                    while (event := subscription.get(timeout=0)) is not None:
                        yield event
                        if event.kind == controller_pb2.EVENT_KIND_SEARCH_FINISHED:
                            return
                    yield controller_pb2.WatchSearchResponse(
                        kind=controller_pb2.EVENT_KIND_SEARCH_FINISHED, search=final
                    )
                    return
                yield event
                if event.kind == controller_pb2.EVENT_KIND_SEARCH_FINISHED:
                    return

    # -- internals -------------------------------------------------------------------

    def _resolve(self, spec: common_pb2.SearchSpec) -> ResolvedSpec:
        """``spec`` checked against what the trainers and latency services report now."""
        offers = self._backends.datasets(spec.training.dataset)
        classes = self._backends.device_classes()
        try:
            dataset = choose_dataset(spec.training.dataset, offers.by_endpoint, offers.problems)
            if not classes:
                raise WorkersUnavailable(
                    "spec.latency.device_class: no latency service answered, so the device "
                    "class cannot be checked; submit again when latency services are up"
                )
            return resolve(spec, dataset=dataset, device_classes=classes, strategies=STRATEGIES)
        except ValueError as err:  # the spec's fault: the rest are the workers'
            raise InvalidInput(str(err)) from None

    def _start(
        self, resolved: ResolvedSpec, search: common_pb2.Search, trials: list[common_pb2.Trial]
    ) -> None:
        runner = SearchRunner(
            resolved,
            search,
            store=self._store,
            backends=self._backends,
            hub=self._hub,
            metrics=self._metrics,
            trials=trials,
            on_finish=self._finished,
            gate=self._gate,
        )
        with self._lock:
            self._runners[search.id] = runner
        runner.start()

    def _finished(self, search_id: str) -> None:
        self._update_search_gauge()

    def _all_trials(self, search_id: str) -> list[common_pb2.Trial]:
        trials: list[common_pb2.Trial] = []
        after = -1
        while True:
            page = self._store.list_trials(search_id, after=after, limit=MAX_PAGE)
            trials.extend(page)
            if len(page) < MAX_PAGE:
                return trials
            after = page[-1].number

    def _update_search_gauge(self) -> None:
        names = [n for n in SS.keys() if n != "SEARCH_STATE_UNSPECIFIED"]  # noqa: SIM118
        counts = dict.fromkeys(names, 0)
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            counts[SS.Name(runner.search.state)] += 1
        for name, value in counts.items():
            self._metrics.searches.labels(name.removeprefix("SEARCH_STATE_").lower()).set(value)

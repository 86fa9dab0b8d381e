"""One running search: proposes trials, dispatches them to workers, records results.

A trial measures latency first (seconds, cached by the latency service), then trains
(minutes), then asks the reward service to score it. A step whose worker fails is retried
on another endpoint up to ``budget.max_attempts`` attempts, keeping what earlier steps
produced; a trial that runs out of attempts fails and counts against
``budget.max_failed_trials``. The search succeeds once ``budget.max_trials`` trials have
completed, and fails when more than ``max_failed_trials`` have failed.

With the median stopping rule (``spec.early_stopping``) a trial whose intermediate
accuracy falls below the median of the completed trials' at the same step is stopped:
its training is cancelled, it is scored with the accuracy it had reached, the strategy
learns from it, and it ends STOPPED, counted apart from completed and failed trials but,
like a completed one, towards ``budget.max_trials``. With ``budget.keep_weights`` the
trained weights of the best that many completed trials are kept in the store.

Beside the trials, the network ``spec.reference`` names is trained once, as a trial would
be, on a trainer slot of its own, from the search's start: its accuracy is stored with the
search for comparison and never reaches the strategy, the budget or the best trials. The
search ends once the reference has ended too; a reference that fails leaves the search
going. A controller that resumes the search trains it only if no result was stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from mnas.latency import reported_seconds
from mnas.v1 import common_pb2, controller_pb2
from services.controller.backends import TrialWorkers, WorkerError
from services.controller.events import EventHub
from services.controller.gate import WorkGate
from services.controller.metrics import ControllerMetrics
from services.controller.spec import ResolvedSpec
from services.controller.stopping import MedianStopping
from services.controller.store import Store
from services.controller.strategies import make_strategy
from services.controller.strategy import Outcome, StrategyStatus
from services.controller.trial_calls import Cancelled, Stopped, TrialCalls

__all__ = ["SearchRunner"]

_logger = logging.getLogger(__name__)

TS = common_pb2.TrialState
SS = common_pb2.SearchState
RS = common_pb2.ReferenceState
FINAL_TRIAL_STATES = (
    TS.TRIAL_STATE_COMPLETED,
    TS.TRIAL_STATE_FAILED,
    TS.TRIAL_STATE_CANCELLED,
    TS.TRIAL_STATE_STOPPED,
)
SCORED_STATES = (TS.TRIAL_STATE_COMPLETED, TS.TRIAL_STATE_STOPPED)
# Batches the strategy's background learner may have waiting (besides the one it is
# learning) before new trials wait for it.
MAX_BACKLOG = 2


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class SearchRunner:
    """Runs one search to its end on a thread of its own."""

    def __init__(
        self,
        resolved: ResolvedSpec,
        search: common_pb2.Search,
        *,
        store: Store,
        backends: TrialWorkers,
        hub: EventHub,
        metrics: ControllerMetrics,
        trials: Sequence[common_pb2.Trial] = (),
        on_finish: Callable[[str], None] | None = None,
        gate: WorkGate | None = None,
    ) -> None:
        self.resolved = resolved
        self.spec = resolved.spec
        self.search = search
        self._store = store
        self._backends = backends
        self._hub = hub
        self._metrics = metrics
        self._search_metrics = metrics.search(search.id)
        self._search_metrics.set_budget(
            self.spec.budget.max_trials, self.spec.budget.max_failed_trials
        )
        self._search_metrics.set_done(search.trials_completed + search.trials_stopped)
        self._on_finish = on_finish
        # Shared by every search of the controller: see services.controller.gate.
        self._gate = gate if gate is not None else WorkGate()
        self._lock = threading.Condition()
        self._cancel = threading.Event()
        self._stopping = False
        self._running: set[int] = set()  # numbers of the trials in flight
        self._checkpoint: bytes | None = None  # taken after an update, not yet written
        self._workers = 0  # threads started to run trials
        self._strategy = make_strategy(
            self.spec.strategy, resolved.space, self.spec.seed, resolved.strategy_config
        )
        self._proposals = 0
        self._rule: MedianStopping | None = None
        stopping = self.spec.early_stopping
        if stopping.rule == common_pb2.EARLY_STOPPING_RULE_MEDIAN:
            self._rule = MedianStopping(
                min_trials=stopping.min_trials, start_step=stopping.start_step
            )
        # Trials whose weights the store keeps: (reward, number), at most keep_weights.
        self._kept: list[tuple[float, int]] = []
        self._calls = TrialCalls(
            resolved,
            search_id=search.id,
            store=store,
            backends=backends,
            gate=self._gate,
            metrics=metrics,
            search_metrics=self._search_metrics,
            cancel=self._cancel,
            rule=self._rule,
        )
        self._reference_thread = self._reference_to_measure()
        self._reference_running = self._reference_thread is not None
        for trial in trials:
            if trial.state == TS.TRIAL_STATE_COMPLETED:
                if search.trials_completed and trial.number == search.best_trial:
                    self._record_best(trial)
                self._learn_curve(trial)
                if trial.has_weights:
                    self._kept.append((trial.reward, trial.number))
        self._resume(sorted(trials, key=lambda t: t.number))
        self._strategy.learn_in_background(self._updated_in_background)
        self._pending = [t for t in trials if t.state not in FINAL_TRIAL_STATES]
        self._next_number = max((t.number for t in trials), default=-1) + 1
        self._thread = threading.Thread(target=self._run, name=f"search-{search.id}", daemon=True)

    # -- strategy state ------------------------------------------------------------

    def _resume(self, trials: list[common_pb2.Trial]) -> None:
        """Continue the strategy where the store says it stood.

        The last checkpoint restores the strategy; proposals made after it are in the store
        already, so the strategy skips past them; finished trials it has not observed are
        observed now. Unfinished trials are dispatched again as they are.
        """
        checkpoint = self._store.load_strategy_state(self.search.id) if trials else None
        if checkpoint is not None:
            self._proposals, state = _unpack(checkpoint)
            self._strategy.restore(state)
        while self._proposals < len(trials):
            self._strategy.propose()
            self._proposals += 1
        observed = self._strategy.observed_numbers()
        for trial in trials:
            if trial.state in FINAL_TRIAL_STATES and trial.number not in observed:
                self._observe(trial)
        self._set_status(self._strategy.status())

    def _observe(self, trial: common_pb2.Trial) -> None:
        """Tell the strategy; after an update, take a checkpoint, which the next write of
        the search (this trial's end, when called for it) records (lock held)."""
        if trial.state == TS.TRIAL_STATE_CANCELLED:
            return
        updated = self._strategy.observe(self._outcome(trial))
        if not updated:
            self.search.strategy_status.observed = self._strategy.status().observed
            return
        self._set_status(self._strategy.status())
        self._checkpoint = _pack(self._proposals, self._strategy.state())

    def _updated_in_background(self) -> None:
        """The strategy's learner made an update: checkpoint it (on the learner's thread).

        The checkpoint is taken under the lock, with the count of proposals it reflects,
        and written with the next trial that ends (or with the search's end), in the same
        transaction: the trials go on meanwhile, and never wait for the store while this
        thread waits for the interpreter. Until then a restart resumes from the checkpoint
        before, and learns again from the trials recorded since.
        """
        reference = self._reference_log_prob()  # a forward pass: not under the lock
        with self._lock:
            self._set_status(self._strategy.status(), reference)
            self._checkpoint = _pack(self._proposals, self._strategy.state())
            self._lock.notify_all()

    def _take_checkpoint(self) -> bytes | None:
        """The checkpoint waiting to be written, if any (lock held)."""
        checkpoint, self._checkpoint = self._checkpoint, None
        return checkpoint

    def _reference_log_prob(self) -> float | None:
        return self._strategy.log_prob(self.resolved.space.reference_decisions())

    def _set_status(self, status: StrategyStatus, reference: float | None = None) -> None:
        """The strategy's status in the search record (lock held); ``reference``: the
        policy's log-probability of the reference network, computed now if not given."""
        self.search.strategy_status.updates = status.updates
        self.search.strategy_status.observed = status.observed
        if status.entropy is not None:
            self.search.strategy_status.entropy = status.entropy
        if reference is None:
            reference = self._reference_log_prob()
        if reference is not None:
            self.search.strategy_status.reference_log_prob = reference

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        if self._reference_thread is not None:  # first, to be first in the trainers' queue
            self._reference_thread.start()
        self._thread.start()

    def cancel(self) -> None:
        """Stop proposing, abort in-flight work; the search ends CANCELLED."""
        self._cancel.set()
        with self._lock:
            self._lock.notify_all()
        self._calls.abort_all()

    def stop(self) -> None:
        """Abort in-flight work without recording final states (controller shutdown).

        The store keeps the search and its unfinished trials as running, so a controller
        started on the same store resumes them.
        """
        self._stopping = True
        self.cancel()

    def snapshot(self) -> common_pb2.Search:
        with self._lock:
            search = common_pb2.Search()
            search.CopyFrom(self.search)
            return search

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- scheduling ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._schedule()
        finally:
            self._strategy.close()  # not under the lock: the learner's callback takes it

    def _schedule(self) -> None:
        budget = self.spec.budget
        try:
            while True:
                with self._lock:
                    if self._cancel.is_set():
                        if not self._running and not self._reference_running:
                            if not self._stopping:
                                self._finish(SS.SEARCH_STATE_CANCELLED)
                            return
                    elif self.search.trials_failed > budget.max_failed_trials:
                        self.cancel()
                        self.search.error = (
                            f"{self.search.trials_failed} trials failed, more than "
                            f"budget.max_failed_trials ({budget.max_failed_trials})"
                        )
                        continue
                    elif (
                        self._done() >= budget.max_trials
                        and not self._running
                        and not self._reference_running
                    ):
                        if self._strategy.learning():  # the last update and its checkpoint
                            self._lock.wait(1.0)
                            continue
                        self._finish(SS.SEARCH_STATE_SUCCEEDED)
                        return
                    if not self._can_start():
                        self._lock.wait(1.0)
                        continue
                    self._workers += 1
                    thread = threading.Thread(
                        target=self._run_trials,
                        args=(self._start_next(),),
                        daemon=True,
                        name=f"trials-{self.search.id}-{self._workers}",
                    )
                thread.start()
        except Exception as err:
            _logger.exception("search %s crashed", self.search.id)
            self.cancel()
            with self._lock:
                self.search.error = f"controller error: {err}"
                while self._running or self._reference_running:
                    self._lock.wait(1.0)
                self._finish(SS.SEARCH_STATE_FAILED)

    def _can_start(self) -> bool:
        """Whether another trial may start now (lock held).

        Not while the strategy's learner is more than :data:`MAX_BACKLOG` updates behind:
        proposals would come from an ever older policy, and every checkpoint would carry
        the waiting batches. Workers that answer in seconds never let it fall behind.
        """
        budget = self.spec.budget
        wanted = budget.max_trials - self._done() - len(self._running)
        return (
            not self._cancel.is_set()
            and self.search.trials_failed <= budget.max_failed_trials
            and len(self._running) < budget.parallel_trials
            and bool(self._pending or wanted > 0)
            and self._strategy.backlog() <= MAX_BACKLOG
        )

    def _start_next(self, *, record: bool = True) -> common_pb2.Trial:
        """The next trial, re-dispatched or newly proposed, as running (lock held).

        One write records the proposal (or the re-dispatch) and the start: here, or with
        ``record=False`` the caller's write, which must follow before the trial runs.
        """
        trial = self._pending.pop(0) if self._pending else self._new_trial()
        trial.state = TS.TRIAL_STATE_RUNNING
        trial.started_at.CopyFrom(_now())
        self.search.trials_running = len(self._running) + 1
        if record:
            self._store.save_trial(trial)
        self._running.add(trial.number)
        return trial

    def _continue(self) -> common_pb2.Trial | None:
        """The next trial for the thread whose trial just ended, if one may start now, not
        yet recorded: it goes in the write of the ended trial (lock held)."""
        if not self._can_start():
            return None
        try:
            return self._start_next(record=False)
        except Exception as err:  # as on the scheduler's thread: the search fails
            _logger.exception("search %s crashed", self.search.id)
            self.search.error = f"controller error: {err}"
            self.cancel()
            return None

    def _done(self) -> int:
        """Trials that count towards ``budget.max_trials`` (lock held)."""
        return self.search.trials_completed + self.search.trials_stopped

    def _learn_curve(self, trial: common_pb2.Trial) -> None:
        if self._rule is not None:
            self._rule.add_completed(
                trial.number, [(e.step, e.accuracy) for e in trial.evaluations]
            )

    def _finish(self, state: common_pb2.SearchState.ValueType) -> None:
        """Record the final state (lock held)."""
        if state == SS.SEARCH_STATE_CANCELLED and self.search.error:
            state = SS.SEARCH_STATE_FAILED
        self.search.state = state
        self.search.trials_running = 0
        self.search.finished_at.CopyFrom(_now())
        self._search_metrics.ended()
        self._store.save(search=self.search, strategy_state=self._take_checkpoint())
        self._publish(controller_pb2.EVENT_KIND_SEARCH_FINISHED)
        _logger.info(
            "search %s %s: %d completed, %d failed",
            self.search.id,
            SS.Name(state),
            self.search.trials_completed,
            self.search.trials_failed,
        )
        if self._on_finish is not None:
            self._on_finish(self.search.id)

    def _new_trial(self) -> common_pb2.Trial:
        proposal = self._strategy.propose()
        self._proposals += 1
        trial = common_pb2.Trial(
            search_id=self.search.id,
            number=self._next_number,
            architecture=common_pb2.Architecture(
                canonical=proposal.arch.canonical, id=proposal.arch.id
            ),
            state=TS.TRIAL_STATE_PENDING,
            decisions=list(proposal.decisions),
            log_probs=list(proposal.log_probs),
        )
        trial.created_at.CopyFrom(_now())
        self._next_number += 1
        return trial

    # -- one trial -------------------------------------------------------------------

    def _run_trials(self, first: common_pb2.Trial) -> None:
        """Run trials one after the other on this thread, as long as the next may start
        as this one ends: no hand-over to the scheduler's thread and no new thread."""
        trial: common_pb2.Trial | None = first
        with self._gate.held():
            while trial is not None:
                trial = self._run_trial(trial)

    def _run_trial(self, trial: common_pb2.Trial) -> common_pb2.Trial | None:
        """Run ``trial`` to its end; the trial to run next on this thread, if any."""
        started = time.monotonic()
        self._search_metrics.trials_running.inc()
        self._publish(controller_pb2.EVENT_KIND_TRIAL_STARTED, trial)
        try:
            self._reuse_duplicate(trial)
            self._attempt_until_done(trial)
        except Cancelled:
            trial.state = TS.TRIAL_STATE_CANCELLED
        except Exception as err:  # a bug must not hang the search
            _logger.exception("trial %s/%d crashed", self.search.id, trial.number)
            trial.state = TS.TRIAL_STATE_FAILED
            trial.error = f"controller error: {err}"
        finally:
            self._search_metrics.trials_running.dec()
        if self._stopping:
            with self._lock:
                self._running.discard(trial.number)
                self._lock.notify_all()
            return None
        trial.finished_at.CopyFrom(_now())
        state_name = TS.Name(trial.state).removeprefix("TRIAL_STATE_").lower()
        completed = trial.state == TS.TRIAL_STATE_COMPLETED
        self._search_metrics.finished(
            state_name,
            time.monotonic() - started,
            accuracy=trial.training.accuracy if completed else None,
            reward=trial.reward if completed else None,
        )
        weights = self._calls.weights.pop(trial.number, None)
        measured = self._calls.measured.pop(trial.number, None)
        self._calls.forget(trial.number)
        with self._lock:
            self._running.discard(trial.number)
            keep: dict[int, bytes] = {}
            dropped: list[common_pb2.Trial] = []
            if trial.state == TS.TRIAL_STATE_COMPLETED:
                self.search.trials_completed += 1
                if self.search.trials_completed == 1 or trial.reward > self.search.best_reward:
                    self.search.best_reward = trial.reward
                    self.search.best_trial = trial.number
                    self._record_best(trial)
                self._learn_curve(trial)
                if weights is not None:
                    keep, dropped = self._keep_weights(trial, weights)
            elif trial.state == TS.TRIAL_STATE_STOPPED:
                self.search.trials_stopped += 1
            elif trial.state == TS.TRIAL_STATE_FAILED:
                self.search.trials_failed += 1
            self.search.trials_running = len(self._running)
            self._search_metrics.set_done(self.search.trials_completed + self.search.trials_stopped)
            self._observe(trial)  # first: its checkpoint, if any, goes with the trial
            # The next trial, if one may start, is recorded as running in the same write.
            following = self._continue()
            try:
                self._store.save(
                    search=self.search,
                    trials=[trial, *dropped, *([following] if following is not None else [])],
                    weights=keep,
                    drop_weights=[t.number for t in dropped],
                    measurements=dict([measured]) if measured is not None else None,
                    strategy_state=self._take_checkpoint(),
                )
            except BaseException:
                if following is not None:  # not recorded: dispatched again later
                    self._running.discard(following.number)
                    self._pending.insert(0, following)
                    self.search.trials_running = len(self._running)
                raise
            if following is None:  # the scheduler decides what happens next
                self._lock.notify_all()
        self._publish(controller_pb2.EVENT_KIND_TRIAL_FINISHED, trial)
        return following

    def _keep_weights(
        self, trial: common_pb2.Trial, weights: bytes
    ) -> tuple[dict[int, bytes], list[common_pb2.Trial]]:
        """Whether the store keeps ``trial``'s weights, and the trials whose weights it
        drops to stay within ``budget.keep_weights`` (lock held)."""
        limit = self.spec.budget.keep_weights
        # Highest reward first; on a tie the earlier trial, as for the search's best.
        candidates = sorted(
            [*self._kept, (trial.reward, trial.number)], key=lambda kept: (-kept[0], kept[1])
        )
        self._kept = candidates[:limit]
        dropped = [number for _, number in candidates[limit:] if number != trial.number]
        keep = {} if (trial.reward, trial.number) not in self._kept else {trial.number: weights}
        trial.has_weights = bool(keep)
        old = []
        for number in dropped:
            record = self._store.get_trial(self.search.id, number)
            if record is not None:
                record.has_weights = False
                old.append(record)
        return keep, old

    def _reuse_duplicate(self, trial: common_pb2.Trial) -> None:
        """Under the reuse policy, take the accuracy of an earlier trial of the same network."""
        if self.spec.duplicates != common_pb2.DUPLICATE_POLICY_REUSE or trial.HasField("training"):
            return
        earlier = self._store.find_completed_by_arch(self.search.id, trial.architecture.id)
        if earlier is None or earlier.number == trial.number:
            return
        trial.training.CopyFrom(earlier.training)
        trial.duplicate_of = earlier.number

    def _attempt_until_done(self, trial: common_pb2.Trial) -> None:
        max_attempts = self.spec.budget.max_attempts
        avoid: dict[str, set[str]] = {"latency": set(), "trainer": set()}
        while True:
            self._calls.check_cancel()
            trial.attempts += 1
            try:
                if not trial.HasField("latency"):
                    self._calls.measure(trial, avoid["latency"])
                if not trial.HasField("training"):
                    self._calls.train(trial, avoid["trainer"])
                self._calls.score(trial)
                trial.state = TS.TRIAL_STATE_COMPLETED
                trial.error = ""
                return
            except Stopped as stop:
                progress = stop.progress
                trial.training.CopyFrom(
                    common_pb2.TrainResult(
                        accuracy=progress.accuracy,
                        loss=progress.loss,
                        seconds=progress.seconds,
                        samples_seen=progress.samples_seen,
                    )
                )
                trial.stopped_at_step = progress.step
                self._calls.score(trial)
                trial.state = TS.TRIAL_STATE_STOPPED
                trial.error = ""
                _logger.info(
                    "trial %s/%d stopped at step %d of %d (accuracy %.4f)",
                    self.search.id,
                    trial.number,
                    progress.step,
                    progress.total_steps,
                    progress.accuracy,
                )
                return
            except WorkerError as err:
                self._calls.check_cancel()
                if err.busy:  # refused at the door: no attempt was made; wait for a slot
                    trial.attempts -= 1
                    _logger.debug("trial %s/%d: %s", self.search.id, trial.number, err)
                    continue
                trial.error = str(err)
                if not err.retryable or trial.attempts >= max_attempts:
                    trial.state = TS.TRIAL_STATE_FAILED
                    _logger.warning("trial %s/%d failed: %s", self.search.id, trial.number, err)
                    return
                _logger.info("trial %s/%d retrying after: %s", self.search.id, trial.number, err)
                self._search_metrics.retried(_failed_step(trial))
                self._store.save_trial(trial)
                self._publish(controller_pb2.EVENT_KIND_TRIAL_RETRIED, trial)

    # -- the reference network -------------------------------------------------------

    def _reference_to_measure(self) -> threading.Thread | None:
        """The thread that trains the reference network, when the spec names one and the
        store holds no result for it yet; the search record shows it pending."""
        network = self.resolved.reference
        if network is None or self.search.reference.state in (
            RS.REFERENCE_STATE_MEASURED,
            RS.REFERENCE_STATE_FAILED,
        ):
            return None
        self.search.reference.CopyFrom(
            common_pb2.Reference(
                name=self.spec.reference,
                architecture=common_pb2.Architecture(canonical=network.canonical, id=network.id),
                state=RS.REFERENCE_STATE_PENDING,
            )
        )
        return threading.Thread(
            target=self._run_reference, name=f"reference-{self.search.id}", daemon=True
        )

    def _run_reference(self) -> None:
        """Train the reference, record its result with the search, let the search end."""
        with self._lock:
            reference = common_pb2.Reference()
            reference.CopyFrom(self.search.reference)
        try:
            self._calls.train_reference(reference)
        except Cancelled:
            reference.state = RS.REFERENCE_STATE_FAILED
            reference.error = "the search ended before it was measured"
        except Exception as err:  # a bug must not hang or fail the search
            _logger.exception("search %s: the reference crashed", self.search.id)
            reference.state = RS.REFERENCE_STATE_FAILED
            reference.error = f"controller error: {err}"
        with self._lock:
            self._reference_running = False
            self._lock.notify_all()
            if self._stopping:  # the controller that resumes the search measures it
                return
            self.search.reference.CopyFrom(reference)
            try:
                self._store.save(search=self.search, strategy_state=self._take_checkpoint())
            except Exception:  # kept in memory: the search's next write records it
                _logger.exception("search %s: recording the reference failed", self.search.id)
        if reference.state == RS.REFERENCE_STATE_MEASURED:
            _logger.info(
                "search %s: reference %s measured: held-out accuracy %.4f (%s, %.1f s)",
                self.search.id,
                reference.name,
                reference.training.accuracy,
                reference.trainer,
                reference.train_seconds,
            )
        else:
            _logger.warning(
                "search %s: reference %s failed: %s",
                self.search.id,
                reference.name,
                reference.error,
            )

    # -- helpers ---------------------------------------------------------------------

    def _record_best(self, trial: common_pb2.Trial) -> None:
        self._search_metrics.set_best(
            trial.reward, trial.training.accuracy, reported_seconds(trial.latency)
        )

    def _outcome(self, trial: common_pb2.Trial) -> Outcome:
        scored = trial.state in SCORED_STATES
        return Outcome(
            number=trial.number,
            decisions=tuple(trial.decisions),
            reward=trial.reward if scored else None,
            log_probs=tuple(trial.log_probs),
            accuracy=trial.training.accuracy if scored else None,
            latency_seconds=reported_seconds(trial.latency) if scored else None,
        )

    def _publish(self, kind: int, trial: common_pb2.Trial | None = None) -> None:
        if not self._hub.watched(self.search.id):
            return
        event = controller_pb2.WatchSearchResponse(kind=kind)  # type: ignore[arg-type]
        with self._lock:
            event.search.CopyFrom(self.search)
        if trial is not None:
            event.trial.CopyFrom(trial)
        self._hub.publish(self.search.id, event)


def _failed_step(trial: common_pb2.Trial) -> str:
    """The kind of worker whose step failed: the first step without a result."""
    if not trial.HasField("latency"):
        return "latency"
    return "trainer" if not trial.HasField("training") else "reward"


def _pack(proposals: int, state: bytes) -> bytes:
    """A checkpoint: a small JSON header (proposals made so far), then the strategy's state."""
    header = json.dumps({"format": 1, "proposals": proposals}).encode()
    return len(header).to_bytes(4, "big") + header + state


def _unpack(checkpoint: bytes) -> tuple[int, bytes]:
    size = int.from_bytes(checkpoint[:4], "big")
    header = json.loads(checkpoint[4 : 4 + size])
    if header.get("format") != 1:
        raise ValueError(f"strategy checkpoint: unknown format {header.get('format')!r}")
    return int(header["proposals"]), checkpoint[4 + size :]

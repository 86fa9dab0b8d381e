"""Tree-structured Parzen estimator search with local moves, through Optuna's ``TPESampler``.

TPE (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; the multivariate
form of Falkner et al. 2018; Watanabe 2023 on what each part does) splits the trials seen so
far at a quantile of the reward, fits a Parzen estimator to the better group and one to the
rest, draws ``candidates`` points from the first and proposes the one where the ratio of
the two densities is highest. Optuna's :class:`optuna.samplers.TPESampler` does that,
multivariate, on an in-memory study with one categorical parameter per decision of the
space. TPE finds the good region fast but polishes slowly: near the best trials its
candidates (mostly copies of a better trial with about one decision changed) are ranked by
a density ratio that hardly tells them apart. So ``local_fraction`` of the proposals,
spread evenly, are local moves instead: the best trial so far with one decision changed to
another choice, uniformly, and never a point already in the study (local search, which
White, Nolen and Savani 2021 found as sample-efficient as any method on NAS benchmarks;
interleaving it with a model's proposals is SMAC's acquisition, Hutter et al. 2011).
Until a trial has completed, and when no new neighbour turns up in a few draws, the
proposal is TPE's. ``benchmarks/search_efficiency.py`` measures the mix against TPE alone.

- A proposal is a trial RUNNING in the study until its outcome comes back. The sampler
  (``constant_liar``) counts the trials in flight among the worse group, so proposals made
  while others run spread out instead of repeating one best guess.
- An outcome is told to the oldest trial in flight with the same decisions; one that
  matches none (a trial this strategy did not propose) joins the study as a completed
  trial. A failed trial stays in flight for good: the sampler keeps counting it among the
  worse, which steers away from what failed (out of memory, say) and changes nothing else.
- Reproducible from the seed: proposal ``k`` draws from a sampler and a generator seeded
  from the strategy's seed and ``k``, so no random state needs saving.
- :meth:`TPEStrategy.state` holds the study's trials in order (decisions, and the reward
  or nothing while in flight), the seed and the count of proposals;
  :meth:`TPEStrategy.restore` rebuilds the study from them, so a controller that restarts
  proposes what the one before would have.
- Every reward changes the next proposal, so :meth:`TPEStrategy.observe` reports an update
  for each (and the controller checkpoints).

Looking for a front (objective ``pareto``, ``StrategyConfig.front``): the study has two
objectives, accuracy (up) and the logarithm of latency (down: equal ratios of latency
weigh alike, fast and slow), which is Optuna's multi-objective TPE (MOTPE, Ozaki et al.
2020, "Multiobjective tree-structured Parzen estimator for computationally expensive
optimization problems": the better group is chosen by non-domination rank, then by
contribution to the hypervolume). The local moves start from a trial of the front found
so far where the front is sparsest, so they fill its gaps and extend its ends;
``benchmarks/front_search.py`` measured that mix against MOTPE alone, against a half and
against parents drawn uniformly.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from mnas.pareto import pareto_front
from mnas.space import SearchSpace
from services.controller.evolution import mutate
from services.controller.strategy import (
    Outcome,
    Proposal,
    Strategy,
    StrategyConfig,
    derive_seed,
    load_json_state,
)

__all__ = ["TPEStrategy"]

STATE_FORMAT = 1
# What the study is told of a completed trial: its reward, or (accuracy, log latency).
_Value = float | tuple[float, float]
LOCAL_TRIES = 20  # draws of a new neighbour of the best trial before TPE proposes instead

# Optuna logs every finished trial, all its parameters included, at INFO on its own
# handler; the controller logs trials itself.
optuna.logging.set_verbosity(optuna.logging.WARNING)


class TPEStrategy(Strategy):
    """Multivariate TPE with a constant liar for the trials in flight, and local moves."""

    name = "tpe"
    searches_front = True

    def __init__(self, space: SearchSpace, seed: int, config: StrategyConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self.settings = self.config.tpe
        self.settings.validate()
        self._distributions: dict[str, BaseDistribution] = {
            d.name: CategoricalDistribution(list(range(d.size))) for d in space.decisions
        }
        self._front = self.config.front
        self._study = _new_study(self._front)
        self._proposed = 0
        # The study's trials in order, as state() writes them: decisions, and the reward,
        # or (accuracy, log latency) when looking for a front (None while in flight).
        self._trials: list[tuple[tuple[int, ...], _Value | None]] = []
        # Per decisions, the indices in _trials of those in flight, oldest first.
        self._in_flight: dict[tuple[int, ...], deque[int]] = {}
        self._known: set[tuple[int, ...]] = set()  # every point in the study
        self._best: int | None = None  # index in _trials of the best reward (first on a tie)

    # -- proposing -------------------------------------------------------------------

    def propose(self) -> Proposal:
        k = self._proposed
        decisions = self._local_move(k) if self._is_local(k) else None
        if decisions is None:
            decisions = self._ask(k)
        else:
            self._study.add_trial(self._frozen(decisions, None))
        self._proposed += 1
        self._in_flight.setdefault(decisions, deque()).append(len(self._trials))
        self._trials.append((decisions, None))
        self._known.add(decisions)
        return self._proposal(decisions)

    def _is_local(self, k: int) -> bool:
        """Whether proposal ``k`` is one of the ``local_fraction`` spread evenly."""
        fraction = self.settings.local_fraction
        return math.floor((k + 1) * fraction) > math.floor(k * fraction)

    def _local_move(self, k: int) -> tuple[int, ...] | None:
        """A neighbour of the best trial (of a trial of the front) not yet in the study
        (None: none has completed yet, or no new neighbour turned up)."""
        if self._best is None:
            return None
        rng = random.Random(derive_seed(self.seed, f"tpe-local:{k}"))
        parent = self._sparse_front_trial(rng) if self._front else self._trials[self._best][0]
        for _ in range(LOCAL_TRIES):
            child = tuple(mutate(parent, self._sizes, rng))
            if child not in self._known:
                return child
        return None

    def _ask(self, k: int) -> tuple[int, ...]:
        """TPE's proposal ``k`` (a RUNNING trial of the study)."""
        with warnings.catch_warnings():  # Optuna 4 calls multivariate and the liar experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._study.sampler = _FixedSpaceTPE(
                self._distributions,
                n_startup_trials=self.settings.startup_trials,
                n_ei_candidates=self.settings.candidates,
                multivariate=True,
                constant_liar=True,
                seed=derive_seed(self.seed, f"tpe:{k}") % 2**32,  # numpy's RandomState: 32 bits
            )
            trial = self._study.ask(self._distributions)
        return tuple(int(trial.params[name]) for name in self._distributions)

    # -- learning --------------------------------------------------------------------

    def _learn(self, outcome: Outcome) -> bool:
        value = self._value(outcome)
        if value is None:
            return False  # its trial, if ours, stays in flight (see the module's text)
        decisions = tuple(int(d) for d in outcome.decisions)
        waiting = self._in_flight.get(decisions)
        if waiting:
            index = waiting.popleft()
            if not waiting:
                del self._in_flight[decisions]
            self._study.tell(index, value)  # the study numbers its trials as _trials
            self._trials[index] = (decisions, value)
        else:
            index = len(self._trials)
            self._study.add_trial(self._frozen(decisions, value))
            self._trials.append((decisions, value))
            self._known.add(decisions)
        self._rank(index)
        return True

    def _value(self, outcome: Outcome) -> _Value | None:
        """What the study is told of ``outcome`` (None: it failed)."""
        if not self._front:
            return None if outcome.reward is None else float(outcome.reward)
        if outcome.accuracy is None or outcome.latency_seconds is None:
            return None
        return (float(outcome.accuracy), math.log(outcome.latency_seconds))

    def _rank(self, index: int) -> None:
        """Keep ``_best`` (the best reward; any completed trial when looking for a front)
        after trial ``index`` completed."""
        value = self._trials[index][1]
        assert value is not None
        if self._best is None:
            self._best = index
            return
        best = self._trials[self._best][1]
        better = isinstance(value, float) and isinstance(best, float) and value > best
        if better or (value == best and index < self._best):
            self._best = index

    def _sparse_front_trial(self, rng: random.Random) -> tuple[int, ...]:
        """A trial of the front (the completed trials no other beats on both accuracy and
        latency), by a binary tournament on crowding distance (NSGA-II's, Deb et al.
        2002): of two drawn at random the one whose neighbours on the front lie further
        apart, the two ends first, so the moves fill the front's gaps and extend it."""
        done = [(d, v) for d, v in self._trials if isinstance(v, tuple)]
        front = pareto_front(done, accuracy=lambda t: t[1][0], latency=lambda t: t[1][1])
        if len(front) < 3:
            return front[rng.randrange(len(front))][0]
        accuracy = [v[0] for _, v in front]  # both increase along the front
        latency = [v[1] for _, v in front]
        spans = (accuracy[-1] - accuracy[0]) or 1.0, (latency[-1] - latency[0]) or 1.0
        crowding = (
            [math.inf]
            + [
                (accuracy[i + 1] - accuracy[i - 1]) / spans[0]
                + (latency[i + 1] - latency[i - 1]) / spans[1]
                for i in range(1, len(front) - 1)
            ]
            + [math.inf]
        )
        a, b = rng.randrange(len(front)), rng.randrange(len(front))
        return front[a if crowding[a] >= crowding[b] else b][0]

    def _frozen(self, decisions: Sequence[int], value: _Value | None) -> FrozenTrial:
        """A trial of the study: completed with ``value``, or RUNNING when None."""
        return create_trial(
            params=dict(zip(self._distributions, decisions, strict=True)),
            distributions=self._distributions,
            value=value if isinstance(value, float) else None,
            values=list(value) if isinstance(value, tuple) else None,
            state=TrialState.RUNNING if value is None else TrialState.COMPLETE,
        )

    # -- state -----------------------------------------------------------------------

    def state(self) -> bytes:
        payload = {
            **self._header(),
            "format": STATE_FORMAT,
            "seed": self.seed,
            "proposed": self._proposed,
            "front": self._front,
            "trials": [[list(d), list(v) if isinstance(v, tuple) else v] for d, v in self._trials],
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        payload = load_json_state(data)
        self._check_header(payload)
        if payload.get("format") != STATE_FORMAT:
            raise ValueError("strategy state: not a TPE state of a known format")
        if bool(payload.get("front", False)) != self._front:
            raise ValueError(
                "strategy state: made for another objective (a front search and a reward "
                "search do not share state)"
            )
        size = len(self._distributions)
        trials = [_trial(entry, size, self._front) for entry in payload["trials"]]
        for decisions, _ in trials:
            self._check_decisions(decisions, "strategy state: trial")
        self._study = _new_study(self._front)
        self._trials, self._in_flight, self._known, self._best = [], {}, set(), None
        for index, (decisions, value) in enumerate(trials):
            self._study.add_trial(self._frozen(decisions, value))
            self._trials.append((decisions, value))
            self._known.add(decisions)
            if value is None:
                self._in_flight.setdefault(decisions, deque()).append(index)
            else:
                self._rank(index)
        self._proposed = int(payload["proposed"])
        self.seed = int(payload["seed"])


class _FixedSpaceTPE(optuna.samplers.TPESampler):
    """TPE over a space known in advance: the same proposals as Optuna's sampler, which
    infers the space from every trial on each ask (with a fresh sampler per proposal that
    was most of a proposal's cost, seconds at a thousand trials)."""

    def __init__(self, distributions: dict[str, BaseDistribution], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._space = dict(sorted(distributions.items()))  # in the order Optuna infers it

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)


def _new_study(front: bool) -> optuna.Study:
    if front:  # accuracy up, log latency down
        return optuna.create_study(directions=["maximize", "minimize"])
    return optuna.create_study(direction="maximize")


def _trial(entry: Any, size: int, front: bool) -> tuple[tuple[int, ...], _Value | None]:
    """One ``[decisions, value]`` entry of a state; ``ValueError`` when malformed."""
    try:
        decisions, value = entry
        points = tuple(decisions)
        if len(points) != size:
            raise ValueError
        if value is None:
            return points, None
        if front:
            accuracy, log_latency = value
            return points, (_number(accuracy), _number(log_latency))
        return points, _number(value)
    except (TypeError, ValueError):
        raise ValueError(f"strategy state: not a trial: {entry!r:.80}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    return float(value)

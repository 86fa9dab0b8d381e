"""What a search strategy is: it proposes architectures and learns from finished trials.

A strategy never writes the store; the controller records what it proposes, tells it what
came back (in any order, failed trials included) and checkpoints :meth:`Strategy.state`
whenever :meth:`Strategy.observe` says the strategy updated itself. Random search is the
reference implementation of the interface; PPO (:mod:`services.controller.ppo`),
regularized evolution (:mod:`services.controller.evolution`) and TPE
(:mod:`services.controller.tpe`) implement the same one; :mod:`services.controller.strategies`
knows them all by name.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mnas.arch import Architecture
from mnas.space import SearchSpace

__all__ = [
    "EvolutionConfig",
    "Outcome",
    "PPOConfig",
    "Proposal",
    "RandomStrategy",
    "Strategy",
    "StrategyConfig",
    "StrategyStatus",
    "TPEConfig",
    "derive_seed",
    "load_json_state",
    "rng_state",
    "set_rng_state",
]


@dataclass(frozen=True)
class Proposal:
    """An architecture, the decisions that produced it and (for policies) their log-probs."""

    decisions: tuple[int, ...]
    arch: Architecture
    log_probs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a finished trial reports back: its reward, or None when it failed; and, for a
    strategy that looks for a front, its accuracy and latency (None when it failed)."""

    number: int
    decisions: tuple[int, ...]
    reward: float | None
    log_probs: tuple[float, ...] = ()
    accuracy: float | None = None
    latency_seconds: float | None = None


@dataclass(frozen=True)
class PPOConfig:
    """PPO over the LSTM controller (MnasNet section 4.2, NASNet's controller).

    ``batch_size`` (20 child models per update), ``clip`` (0.2), ``baseline_decay`` (0.95),
    one LSTM layer of ``hidden_size`` 100 and Adam are NASNet's. NASNet's learning rate,
    3.5e-4, is tuned for about 20K sampled models; searches here run hundreds to a few
    thousand trials, so the default is higher (``benchmarks/search_efficiency.py``), with
    ``epochs`` passes of PPO over each batch. The entropy bonus keeps the policy from
    collapsing onto the first good architecture.
    """

    batch_size: int = 20
    learning_rate: float = 0.005
    clip: float = 0.2
    entropy_weight: float = 0.001
    baseline_decay: float = 0.95
    epochs: int = 4
    hidden_size: int = 100

    def validate(self, prefix: str = "ppo") -> None:
        """``ValueError`` naming the first field out of range."""
        _check_int(prefix, "batch_size", self.batch_size, 1)
        _check_float(prefix, "learning_rate", self.learning_rate, 0.0, math.inf, "(0, inf)")
        _check_float(prefix, "clip", self.clip, 0.0, 1.0, "(0, 1)")
        _check_float(
            prefix, "entropy_weight", self.entropy_weight, 0.0, math.inf, "[0, inf)", closed=True
        )
        _check_float(prefix, "baseline_decay", self.baseline_decay, 0.0, 1.0, "[0, 1)", closed=True)
        _check_int(prefix, "epochs", self.epochs, 1)
        _check_int(prefix, "hidden_size", self.hidden_size, 1)


@dataclass(frozen=True)
class EvolutionConfig:
    """Regularized (aging) evolution (Real et al. 2019): population and tournament size."""

    population: int = 64
    sample_size: int = 16

    def validate(self, prefix: str = "evolution") -> None:
        """``ValueError`` naming the first field out of range."""
        _check_int(prefix, "population", self.population, 2)
        _check_int(prefix, "sample_size", self.sample_size, 1)
        if self.sample_size > self.population:
            raise ValueError(
                f"{prefix}.sample_size: must be at most population ({self.population}), "
                f"got {self.sample_size}"
            )


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one use of a strategy's seed (initialization, sampling, proposal
    ``k``): strategies derive every random stream from the search's seed this way."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class TPEConfig:
    """TPE with local moves (:mod:`services.controller.tpe`).

    ``startup_trials`` completed trials are sampled uniformly before the estimators take
    over, and ``candidates`` are drawn from the better group's estimator per proposal
    (Optuna's ``n_startup_trials`` and ``n_ei_candidates``); ``local_fraction`` of the
    proposals are instead one-decision changes of the best trial so far (0: TPE alone);
    looking for a front, of a trial of the front where the front is sparsest.
    """

    startup_trials: int = 3
    candidates: int = 24
    local_fraction: float = 0.25

    def validate(self, prefix: str = "tpe") -> None:
        """``ValueError`` naming the first field out of range."""
        _check_int(prefix, "startup_trials", self.startup_trials, 0)
        _check_int(prefix, "candidates", self.candidates, 1)
        _check_float(prefix, "local_fraction", self.local_fraction, 0.0, 1.0, "[0, 1)", closed=True)


@dataclass(frozen=True)
class StrategyConfig:
    """Settings of every strategy; each strategy reads its own part. ``front``: look for
    the front of accuracy against latency (objective kind pareto) rather than climb the
    reward; only strategies whose ``searches_front`` is true take it."""

    ppo: PPOConfig = PPOConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    tpe: TPEConfig = TPEConfig()
    front: bool = False


@dataclass(frozen=True)
class StrategyStatus:
    """Progress of a strategy, for the search's status."""

    updates: int
    observed: int
    entropy: float | None


class Strategy(abc.ABC):
    """Proposes architectures from a space and learns from the outcomes, in any order.

    :meth:`observe` records each trial number once and hands new outcomes to
    :meth:`_learn`; subclasses keep everything they need to continue in :meth:`state`.
    """

    name: ClassVar[str]
    # Whether it can look for a front (``StrategyConfig.front``) instead of one reward.
    searches_front: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, seed: int, config: StrategyConfig | None = None) -> None:
        self.space = space
        self.seed = seed
        self.config = config if config is not None else StrategyConfig()
        if self.config.front and not self.searches_front:
            raise ValueError(f"strategy {self.name} cannot look for a front (objective pareto)")
        self._sizes = tuple(d.size for d in space.decisions)
        self._observed: set[int] = set()

    @abc.abstractmethod
    def propose(self) -> Proposal:
        """The next architecture to try."""

    def observe(self, outcome: Outcome) -> bool:
        """Learn from a finished trial; True when the strategy updated itself now.

        A number seen before is ignored (False). ``ValueError`` when the outcome does not
        fit the space.
        """
        if outcome.number in self._observed:
            return False
        self._check_outcome(outcome)
        self._observed.add(outcome.number)
        return self._learn(outcome)

    def _learn(self, outcome: Outcome) -> bool:
        """Take in a new outcome; True when the strategy changed what it will propose."""
        return False

    def observed_numbers(self) -> frozenset[int]:
        """Trial numbers whose outcomes :meth:`state` reflects."""
        return frozenset(self._observed)

    @abc.abstractmethod
    def state(self) -> bytes:
        """Everything needed to continue exactly from here."""

    @abc.abstractmethod
    def restore(self, data: bytes) -> None:
        """Continue from a :meth:`state` of a strategy of the same kind, space and config."""

    def status(self) -> StrategyStatus:
        return StrategyStatus(updates=0, observed=len(self._observed), entropy=None)

    def log_prob(self, decisions: Sequence[int]) -> float | None:
        """Log-probability of ``decisions`` under the current policy (None: no policy)."""
        return None

    # -- learning in the background (optional) ---------------------------------------

    def learn_in_background(self, on_update: Callable[[], None]) -> bool:
        """Run expensive updates on a thread of the strategy's own from now on, calling
        ``on_update`` (on that thread, holding no lock of the strategy's) after each; True
        when the strategy does so. :meth:`observe` then returns False and proposals keep
        coming from the policy before the update until it is done. The caller serializes
        ``propose``, ``observe``, ``state`` and ``restore`` as before."""
        return False

    def learning(self) -> bool:
        """Whether a background update is running or waiting to run."""
        return False

    def backlog(self) -> int:
        """Batches handed to the background learner and not applied yet (the one being
        learned included)."""
        return 0

    def close(self) -> None:  # noqa: B027 -- a hook: only strategies that learn need it
        """Stop the background learner, if any (updates not yet made are dropped)."""

    # -- helpers for subclasses ------------------------------------------------------

    def _proposal(self, decisions: Sequence[int], log_probs: Sequence[float] = ()) -> Proposal:
        values = tuple(int(d) for d in decisions)
        return Proposal(
            decisions=values,
            arch=self.space.to_architecture(values),
            log_probs=tuple(float(p) for p in log_probs),
        )

    def _check_decisions(self, decisions: Sequence[int], where: str) -> None:
        if len(decisions) != len(self._sizes):
            raise ValueError(
                f"{where}: expected {len(self._sizes)} decisions, got {len(decisions)}"
            )
        for i, (value, size) in enumerate(zip(decisions, self._sizes, strict=True)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
                raise ValueError(
                    f"{where}[{i}] ({self.space.decisions[i].name}): "
                    f"expected an index in 0..{size - 1}, got {value!r}"
                )

    def _check_outcome(self, outcome: Outcome) -> None:
        where = f"outcome {outcome.number}"
        if outcome.reward is not None and not _is_finite(outcome.reward):
            raise ValueError(f"{where}.reward: must be a finite number, got {outcome.reward!r}")
        if outcome.accuracy is not None and not _is_finite(outcome.accuracy):
            raise ValueError(f"{where}.accuracy: must be a finite number, got {outcome.accuracy!r}")
        latency = outcome.latency_seconds
        if latency is not None and not (_is_finite(latency) and latency > 0):
            raise ValueError(f"{where}.latency_seconds: must be > 0, got {latency!r}")
        if outcome.reward is not None:
            self._check_decisions(outcome.decisions, f"{where}.decisions")

    def _header(self) -> dict[str, Any]:
        """Fields every state carries: the strategy, the space's shape, observed numbers."""
        return {
            "strategy": self.name,
            "sizes": list(self._sizes),
            "observed": _to_runs(self._observed),
        }

    def _check_header(self, header: dict[str, Any]) -> None:
        """``ValueError`` unless ``header`` comes from this kind of strategy on this space;
        restores the observed numbers."""
        if header.get("strategy") != self.name:
            raise ValueError(
                f"strategy state: made by {header.get('strategy')!r}, not {self.name!r}"
            )
        if list(header.get("sizes", ())) != list(self._sizes):
            raise ValueError("strategy state: made for a different search space")
        self._observed = _from_runs(header["observed"])


class RandomStrategy(Strategy):
    """Uniform sampling of the space, reproducible from the seed (blind to the objective,
    so it samples a front as well as anything)."""

    name = "random"
    searches_front = True

    def __init__(self, space: SearchSpace, seed: int, config: StrategyConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self._rng = random.Random(seed)

    def propose(self) -> Proposal:
        return self._proposal(self.space.sample_decisions(self._rng))

    def state(self) -> bytes:
        return json.dumps({**self._header(), "rng": rng_state(self._rng)}).encode()

    def restore(self, data: bytes) -> None:
        payload = load_json_state(data)
        self._check_header(payload)
        set_rng_state(self._rng, payload["rng"])


def load_json_state(data: bytes) -> dict[str, Any]:
    """A JSON state as a dict; ``ValueError`` when ``data`` is not one."""
    try:
        payload = json.loads(data)
    except ValueError as err:  # includes bad UTF-8
        raise ValueError(f"strategy state: not a JSON state ({err})") from None
    if not isinstance(payload, dict):
        raise ValueError("strategy state: not a JSON object")
    return payload


def rng_state(rng: random.Random) -> list[Any]:
    """``rng``'s state as plain JSON-ready lists and ints."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: Sequence[Any]) -> None:
    """Put back a state from :func:`rng_state`."""
    version, internal, gauss = state
    rng.setstate((int(version), tuple(int(x) for x in internal), gauss))


def _to_runs(numbers: Iterable[int]) -> list[list[int]]:
    """Sorted numbers as inclusive ``[first, last]`` runs (trial numbers are mostly dense)."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return runs


def _from_runs(runs: Iterable[Sequence[int]]) -> set[int]:
    return {n for first, last in runs for n in range(int(first), int(last) + 1)}


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)


def _check_int(prefix: str, name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{prefix}.{name}: must be an integer >= {low}, got {_fmt(value)}")


def _check_float(
    prefix: str,
    name: str,
    value: object,
    low: float,
    high: float,
    shown: str,
    *,
    closed: bool = False,
) -> None:
    """``low < value < high`` (``low <= value`` when ``closed``), ``shown`` in the message."""
    ok = _is_finite(value) and (
        (low <= value if closed else low < value) and value < high  # type: ignore[operator]
    )
    if not ok:
        raise ValueError(f"{prefix}.{name}: must be in {shown}, got {_fmt(value)}")

"""Validate a search spec fully and fill in its defaults, before anything is stored.

The checks are :func:`mnas.spec_check.check_spec`'s, the ones ``mnas validate`` runs, given
what only the workers know: the data set as the trainers report it, the device classes
of the latency services and the strategies this controller runs. Every problem is
reported at once: :class:`~mnas.spec_check.SpecError` (a ``ValueError``) has one line per
problem, each starting with the field path (``spec.budget.parallel_trials: ...``); the
servicer turns it into INVALID_ARGUMENT. :class:`WorkersUnavailable` when no worker
answered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mnas import recipe, references
from mnas.arch import Architecture
from mnas.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_DEVICE_CLASS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MIN_TRIALS,
    DEFAULT_PRESET,
    DEFAULT_RUNS,
    DEFAULT_STRATEGY,
    DEFAULT_WARMUP_RUNS,
)
from mnas.space import PRESETS, SearchSpace
from mnas.spec_check import (
    NO_REFERENCE,
    SPACE_REFERENCE,
    Dataset,
    Problem,
    SpecError,
    check_spec,
    closest,
    default_validation_examples,
    search_space,
)
from mnas.v1 import common_pb2
from services.controller.strategy import EvolutionConfig, PPOConfig, Strategy, StrategyConfig
from services.reward.conversions import objective_from_proto
from services.reward.rewards import Kind, Objective

__all__ = [
    "Dataset",
    "ResolvedSpec",
    "WorkersUnavailable",
    "choose_dataset",
    "resolve",
    "stored_dataset",
]


class WorkersUnavailable(Exception):
    """No worker of the kind a spec's field is checked against answered; try again later."""


def choose_dataset(
    name: str, offers: Mapping[str, Mapping[str, Dataset]], problems: Mapping[str, str]
) -> Dataset:
    """The data set ``name`` (empty: the default) as the trainers that answered describe
    it (``offers``: endpoint -> name -> data set). Trainers that lack it are tolerated;
    trainers that disagree about it are an error."""
    name = name or DEFAULT_DATASET
    if not offers:
        raise WorkersUnavailable(
            "spec.training.dataset: no trainer answered, so the data set cannot be checked; "
            "submit again when trainers are up" + (f" ({_problems(problems)})" if problems else "")
        )
    found = {endpoint: o[name] for endpoint, o in offers.items() if name in o}
    if not found:
        offered = sorted({d.describe() for o in offers.values() for d in o.values()})
        guess = closest(name, {n for o in offers.values() for n in o})
        raise ValueError(
            f"spec.training.dataset: no trainer serves {name!r}"
            + (f" (did you mean {guess!r}?)" if guess else "")
            + "; the trainers offer: "
            + ("; ".join(offered) or "nothing")
            + (f" ({_problems(problems)})" if problems else "")
        )
    variants = {d: endpoint for endpoint, d in found.items()}
    if len(variants) > 1:
        listed = "; ".join(f"{endpoint}: {d.describe()}" for d, endpoint in variants.items())
        raise ValueError(f"spec.training.dataset: trainers disagree about {name!r}: {listed}")
    return next(iter(variants))


def _problems(problems: Mapping[str, str]) -> str:
    return "; ".join(f"trainer {endpoint}: {text}" for endpoint, text in sorted(problems.items()))


def stored_dataset(spec: common_pb2.SearchSpec) -> Dataset:
    """The data set of a stored (resolved) spec, from the values written into it."""
    return Dataset(
        name=spec.training.dataset or DEFAULT_DATASET,
        classes=spec.space.num_classes,
        resolution=spec.space.resolution,
        examples=None,
    )


@dataclass(frozen=True)
class ResolvedSpec:
    """A valid spec with its defaults written in, and the domain objects it describes."""

    spec: common_pb2.SearchSpec
    space: SearchSpace
    objective: Objective
    strategy_config: StrategyConfig
    # The network spec.reference names, trained once per search; None for "none".
    reference: Architecture | None = None

    @property
    def build(self) -> common_pb2.BuildParams:
        return common_pb2.BuildParams(
            resolution=self.spec.space.resolution,
            num_classes=self.spec.space.num_classes,
            width=self.spec.space.width,
        )

    @property
    def latency_build(self) -> common_pb2.BuildParams:
        return common_pb2.BuildParams(
            resolution=self.spec.latency.resolution,
            num_classes=self.spec.space.num_classes,
            width=self.spec.space.width,
        )


def resolve(
    spec: common_pb2.SearchSpec,
    *,
    dataset: Dataset,
    device_classes: Collection[str],
    strategies: Mapping[str, type[Strategy]],
) -> ResolvedSpec:
    """Check every field of ``spec`` (:class:`SpecError` lists every problem) and return
    it completed with defaults; ``dataset`` is what the trainers report of
    ``spec.training.dataset`` (see :func:`choose_dataset`)."""
    problems = check_spec(
        spec,
        dataset=dataset,
        device_classes=device_classes,
        strategies=strategies,
        front_strategies=[name for name, cls in strategies.items() if cls.searches_front],
    )
    if problems:
        raise SpecError(problems)
    out = common_pb2.SearchSpec()
    out.CopyFrom(spec)
    objective = objective_from_proto(out.objective, "spec.objective")
    front = objective.kind is Kind.PARETO
    if not front:
        out.objective.alpha = objective.alpha
        out.objective.beta = objective.beta
    _training(out.training, dataset)
    space = _space(out.space, dataset)
    _budget(out.budget)
    _early_stopping(out.early_stopping)
    out.training.return_weights = out.budget.keep_weights > 0
    _latency(out.latency, out.space.resolution)
    out.strategy = out.strategy or DEFAULT_STRATEGY
    config = StrategyConfig(  # the strategies' own defaults may still clash with a value
        ppo=_with_defaults(out.ppo, PPOConfig(), "spec.ppo"),
        evolution=_with_defaults(out.evolution, EvolutionConfig(), "spec.evolution"),
        front=front,
    )
    if out.duplicates == common_pb2.DUPLICATE_POLICY_UNSPECIFIED:
        out.duplicates = common_pb2.DUPLICATE_POLICY_REUSE
    reference = _reference(out, space)
    return ResolvedSpec(
        spec=out, space=space, objective=objective, strategy_config=config, reference=reference
    )


def _with_defaults(
    message: common_pb2.PPOConfig | common_pb2.EvolutionConfig,
    defaults: PPOConfig | EvolutionConfig,
    path: str,
) -> Any:
    """The dataclass ``defaults`` overridden by the message's non-zero fields, validated;
    the message gets every value written in."""
    names = [
        f.name for f in dataclasses.fields(defaults) if f.name in message.DESCRIPTOR.fields_by_name
    ]
    overrides = {name: getattr(message, name) for name in names if getattr(message, name)}
    config = dataclasses.replace(defaults, **overrides)
    config.validate(path)
    for name in names:
        setattr(message, name, getattr(config, name))
    return config


def _training(t: common_pb2.Training, info: Dataset) -> None:
    if not t.dataset:
        t.dataset = DEFAULT_DATASET
    if t.steps == 0 and t.epochs == 0:
        t.epochs = 1
    if t.batch_size == 0:
        t.batch_size = DEFAULT_BATCH_SIZE
    if info.examples is not None and t.validation_examples == 0:
        t.validation_examples = default_validation_examples(info.examples)
    if t.optimizer == common_pb2.OPTIMIZER_UNSPECIFIED:
        t.optimizer = common_pb2.OPTIMIZER_SGD
    if t.schedule == common_pb2.LEARNING_RATE_SCHEDULE_UNSPECIFIED:
        t.schedule = common_pb2.LEARNING_RATE_SCHEDULE_COSINE
    rmsprop = t.optimizer == common_pb2.OPTIMIZER_RMSPROP
    by_optimizer = recipe.optimizer_defaults("rmsprop" if rmsprop else "sgd", t.batch_size)
    if t.learning_rate == 0:
        t.learning_rate = by_optimizer["learning_rate"]
    defaults = {
        "momentum": recipe.MOMENTUM,
        "weight_decay": by_optimizer["weight_decay"],
        "label_smoothing": recipe.LABEL_SMOOTHING,
        "warmup_fraction": by_optimizer["warmup_fraction"],
    }
    for name, default in defaults.items():
        if not t.HasField(name):  # type: ignore[arg-type]
            setattr(t, name, default)
    if t.evaluation_examples == 0:
        t.evaluation_examples = min(recipe.EVALUATION_EXAMPLES, t.validation_examples)


def _early_stopping(e: common_pb2.EarlyStopping) -> None:
    if e.rule == common_pb2.EARLY_STOPPING_RULE_UNSPECIFIED:
        e.rule = common_pb2.EARLY_STOPPING_RULE_NONE
    if e.min_trials == 0:
        e.min_trials = DEFAULT_MIN_TRIALS


def _space(s: common_pb2.SearchSpaceSpec, info: Dataset) -> SearchSpace:
    defaults = SearchSpace()
    if not s.preset:
        s.preset = DEFAULT_PRESET
    if not s.stages:
        for stage in PRESETS[s.preset].stages:
            s.stages.add(
                expansion=stage.expansion,
                filters=stage.filters,
                layers=stage.layers,
                stride=stage.stride,
            )
    if not s.HasField("choices"):
        c = s.choices
        c.ops.extend(defaults.ops)
        c.kernels.extend(defaults.kernels)
        c.se_ratios.extend(defaults.se_ratios)
        c.skips.extend(defaults.skips)
        c.filter_ratios.extend(defaults.filter_ratios)
        c.layer_deltas.extend(defaults.layer_deltas)
    if s.resolution == 0:
        s.resolution = info.resolution
    if s.num_classes == 0:
        s.num_classes = info.classes
    if s.width == 0:
        s.width = 1.0
    if s.stem_filters == 0:
        s.stem_filters = defaults.stem_filters
    if s.head_filters == 0:
        s.head_filters = defaults.head_filters
    if not s.activation:
        s.activation = defaults.activation.value
    if not s.HasField("dropout"):
        s.dropout = defaults.dropout
    try:
        return search_space(s, resolution=s.resolution, num_classes=s.num_classes)
    except ValueError as err:  # checked before: not expected
        raise SpecError([Problem("space", str(err))]) from None


def _reference(spec: common_pb2.SearchSpec, space: SearchSpace) -> Architecture | None:
    """The network ``spec.reference`` names (default: the space's reference); None for
    "none"."""
    if not spec.reference:
        spec.reference = SPACE_REFERENCE
    if spec.reference == NO_REFERENCE:
        return None
    if spec.reference == SPACE_REFERENCE:
        return space.to_architecture(space.reference_decisions())
    return references.get(spec.reference)


def _budget(b: common_pb2.Budget) -> None:
    if b.parallel_trials == 0:
        b.parallel_trials = 1
    if b.max_failed_trials == 0:
        b.max_failed_trials = b.max_trials
    if b.max_attempts == 0:
        b.max_attempts = DEFAULT_MAX_ATTEMPTS


def _latency(lat: common_pb2.LatencySettings, resolution: int) -> None:
    if not lat.device_class:
        lat.device_class = DEFAULT_DEVICE_CLASS
    if lat.warmup_runs == 0:
        lat.warmup_runs = DEFAULT_WARMUP_RUNS
    if lat.runs == 0:
        lat.runs = DEFAULT_RUNS
    if lat.threads == 0:
        lat.threads = 1
    if lat.resolution == 0:
        lat.resolution = resolution

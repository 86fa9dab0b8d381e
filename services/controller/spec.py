"""Validate a search spec fully and fill in its defaults, before anything is stored.

Every error is a ``ValueError`` whose message starts with the field path
(``spec.budget.parallel_trials: ...``); the servicer turns it into INVALID_ARGUMENT.
The data set and the device class are checked against what the workers report (the
controller reads no data set itself); :class:`WorkersUnavailable` when none answered.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mnas import recipe, references
from mnas.arch import Activation, Architecture
from mnas.layers import plan
from mnas.space import SearchSpace, Stage, preset
from mnas.v1 import common_pb2
from services.controller.strategies import EvolutionConfig, PPOConfig, StrategyConfig
from services.reward.rewards import Objective
from services.reward.server import objective_from_proto

__all__ = [
    "Dataset",
    "ResolvedSpec",
    "WorkersUnavailable",
    "choose_dataset",
    "resolve",
    "stored_dataset",
]

DEFAULT_DATASET = "fashion-mnist"
# spec.reference: the space's own reference network, or none at all.
SPACE_REFERENCE = "space"
NO_REFERENCE = "none"

DEFAULT_MAX_ATTEMPTS = 3
MAX_TRIALS_LIMIT = 1_000_000


class WorkersUnavailable(Exception):
    """No worker of the kind a spec's field is checked against answered; try again later."""


@dataclass(frozen=True)
class Dataset:
    """What a spec needs to know of its data set, as a trainer reports it. ``examples``
    is ``None`` when unknown (a stored spec, whose defaults are already written in)."""

    name: str
    classes: int
    resolution: int
    examples: int | None

    def describe(self) -> str:
        size = f", {self.examples} examples" if self.examples is not None else ""
        side = self.resolution
        return f"{self.name} ({self.classes} classes, {side}x{side}{size})"


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
        raise ValueError(
            f"spec.training.dataset: no trainer serves {name!r}; the trainers offer: "
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
    strategies: Collection[str],
) -> ResolvedSpec:
    """Check every field of ``spec`` and return it completed with defaults; ``dataset`` is
    what the trainers report of ``spec.training.dataset`` (see :func:`choose_dataset`)."""
    out = common_pb2.SearchSpec()
    out.CopyFrom(spec)
    if len(out.name) > 200:
        raise ValueError("spec.name: at most 200 characters")
    if not out.HasField("objective"):
        raise ValueError("spec.objective: required (target_latency_seconds and kind)")
    objective = objective_from_proto(out.objective, "spec.objective")
    out.objective.alpha = objective.alpha
    out.objective.beta = objective.beta

    classes, native = _training(out.training, dataset)
    space = _space(out.space, classes, native)
    _budget(out.budget)
    _early_stopping(out.early_stopping, out.training)
    out.training.return_weights = out.budget.keep_weights > 0
    _latency(out.latency, out.space.resolution, device_classes)
    if not out.strategy:
        out.strategy = "random"
    if out.strategy not in strategies:
        raise ValueError(
            f"spec.strategy: unknown strategy {out.strategy!r} "
            f"(known: {', '.join(sorted(strategies))})"
        )
    config = StrategyConfig(
        ppo=_with_defaults(out.ppo, PPOConfig(), "spec.ppo"),
        evolution=_with_defaults(out.evolution, EvolutionConfig(), "spec.evolution"),
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


def _training(t: common_pb2.Training, info: Dataset) -> tuple[int, int]:
    if not t.dataset:
        t.dataset = DEFAULT_DATASET
    if t.dataset != info.name:
        raise ValueError(f"spec.training.dataset: {t.dataset!r}, but checked {info.name!r}")
    for name in ("epochs", "steps", "train_examples", "validation_examples", "batch_size"):
        if getattr(t, name) < 0:
            raise ValueError(f"spec.training.{name}: must be >= 0, got {getattr(t, name)}")
    if t.steps == 0 and t.epochs == 0:
        t.epochs = 1
    if t.batch_size == 0:
        t.batch_size = 128
    if info.examples is not None:
        _split(t, info.examples)
    _recipe(t)
    return info.classes, info.resolution


def _split(t: common_pb2.Training, examples: int) -> None:
    """The held-out and training examples, within the data set's ``examples``."""
    if t.validation_examples == 0:
        t.validation_examples = min(10_000, examples // 6)
    if t.validation_examples >= examples:
        raise ValueError(
            f"spec.training.validation_examples: {t.validation_examples} leaves nothing to "
            f"train on ({t.dataset} has {examples} training examples)"
        )
    if t.train_examples > examples - t.validation_examples:
        raise ValueError(
            f"spec.training.train_examples: {t.train_examples} exceeds the "
            f"{examples - t.validation_examples} examples not held out"
        )


def _recipe(t: common_pb2.Training) -> None:
    """The optimizer, schedule and evaluation settings, with the trainer's defaults."""
    if t.optimizer not in common_pb2.Optimizer.values():
        raise ValueError(f"spec.training.optimizer: unknown value {t.optimizer}")
    if t.schedule not in common_pb2.LearningRateSchedule.values():
        raise ValueError(f"spec.training.schedule: unknown value {t.schedule}")
    if t.optimizer == common_pb2.OPTIMIZER_UNSPECIFIED:
        t.optimizer = common_pb2.OPTIMIZER_SGD
    rmsprop = t.optimizer == common_pb2.OPTIMIZER_RMSPROP
    if t.schedule == common_pb2.LEARNING_RATE_SCHEDULE_UNSPECIFIED:
        t.schedule = common_pb2.LEARNING_RATE_SCHEDULE_COSINE
    by_optimizer = recipe.optimizer_defaults("rmsprop" if rmsprop else "sgd", t.batch_size)
    if t.learning_rate == 0:
        t.learning_rate = by_optimizer["learning_rate"]
    if not math.isfinite(t.learning_rate) or t.learning_rate < 0:
        raise ValueError(f"spec.training.learning_rate: must be positive, got {t.learning_rate}")
    defaults = {
        "momentum": recipe.MOMENTUM,
        "weight_decay": by_optimizer["weight_decay"],
        "label_smoothing": recipe.LABEL_SMOOTHING,
        "warmup_fraction": by_optimizer["warmup_fraction"],
    }
    for name, default in defaults.items():
        if not t.HasField(name):  # type: ignore[arg-type]
            setattr(t, name, default)
        value = getattr(t, name)
        high = math.inf if name == "weight_decay" else 1.0
        if not (math.isfinite(value) and 0.0 <= value < high):
            bound = ">= 0" if high == math.inf else "in [0, 1)"
            raise ValueError(f"spec.training.{name}: must be {bound}, got {value}")
    if not (math.isfinite(t.timeout_seconds) and t.timeout_seconds >= 0):
        raise ValueError(
            f"spec.training.timeout_seconds: must be >= 0 (0: no limit), got {t.timeout_seconds}"
        )
    for name in ("evaluate_every_steps", "evaluation_examples"):
        if getattr(t, name) < 0:
            raise ValueError(f"spec.training.{name}: must be >= 0, got {getattr(t, name)}")
    if t.evaluation_examples == 0:
        t.evaluation_examples = min(recipe.EVALUATION_EXAMPLES, t.validation_examples)


def _early_stopping(e: common_pb2.EarlyStopping, t: common_pb2.Training) -> None:
    if e.rule not in common_pb2.EarlyStoppingRule.values():
        raise ValueError(f"spec.early_stopping.rule: unknown value {e.rule}")
    if e.rule == common_pb2.EARLY_STOPPING_RULE_UNSPECIFIED:
        e.rule = common_pb2.EARLY_STOPPING_RULE_NONE
    for name in ("min_trials", "start_step"):
        if getattr(e, name) < 0:
            raise ValueError(f"spec.early_stopping.{name}: must be >= 0, got {getattr(e, name)}")
    if e.min_trials == 0:
        e.min_trials = 3
    if e.rule == common_pb2.EARLY_STOPPING_RULE_MEDIAN and t.evaluate_every_steps == 0:
        raise ValueError(
            "spec.early_stopping.rule: the median rule compares intermediate accuracies; "
            "set spec.training.evaluate_every_steps > 0"
        )


def _space(s: common_pb2.SearchSpaceSpec, classes: int, native: int) -> SearchSpace:
    defaults = SearchSpace()
    if not s.preset:
        s.preset = "mnasnet"
    try:
        chosen = preset(s.preset)
    except ValueError as err:
        raise ValueError(f"spec.{err}") from None
    if not s.stages:
        for stage in chosen.stages:
            s.stages.add(
                expansion=stage.expansion,
                filters=stage.filters,
                layers=stage.layers,
                stride=stage.stride,
            )
    c = s.choices
    if s.HasField("choices"):
        for name in ("ops", "kernels", "se_ratios", "skips", "filter_ratios", "layer_deltas"):
            if not getattr(c, name):
                raise ValueError(
                    f"spec.space.choices.{name}: empty (a given 'choices' lists every "
                    "decision's choices)"
                )
    else:
        c.ops.extend(defaults.ops)
        c.kernels.extend(defaults.kernels)
        c.se_ratios.extend(defaults.se_ratios)
        c.skips.extend(defaults.skips)
        c.filter_ratios.extend(defaults.filter_ratios)
        c.layer_deltas.extend(defaults.layer_deltas)
    if s.resolution == 0:
        s.resolution = native
    if s.num_classes == 0:
        s.num_classes = classes
    if s.num_classes < classes:
        raise ValueError(
            f"spec.space.num_classes: the dataset has {classes} classes, got {s.num_classes}"
        )
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
        activation = Activation(s.activation)
    except ValueError:
        known = ", ".join(a.value for a in Activation)
        raise ValueError(
            f"spec.space.activation: unknown {s.activation!r} (known: {known})"
        ) from None
    try:
        space = SearchSpace(
            stages=tuple(Stage(st.expansion, st.filters, st.layers, st.stride) for st in s.stages),
            ops=tuple(c.ops),
            kernels=tuple(c.kernels),
            se_ratios=tuple(c.se_ratios),
            skips=tuple(c.skips),
            filter_ratios=tuple(c.filter_ratios),
            layer_deltas=tuple(c.layer_deltas),
            stem_filters=s.stem_filters,
            head_filters=s.head_filters,
            activation=activation,
            dropout=s.dropout,
            resolution=s.resolution,
            num_classes=s.num_classes,
            width=s.width,
        )
    except ValueError as err:
        raise ValueError(_space_path(str(err))) from None
    _check_resolution(space, "spec.space.resolution", s.resolution)
    return space


def _space_path(message: str) -> str:
    """``space.ops: ...`` -> ``spec.space.choices.ops: ...`` (the spec's field path)."""
    for name in ("ops", "kernels", "se_ratios", "skips", "filter_ratios", "layer_deltas"):
        if message.startswith(f"space.{name}"):
            return "spec.space.choices." + message.removeprefix("space.")
    if message.startswith("space.stages[") and "reference op" in message:
        return "spec.space.choices.ops: " + message
    return "spec." + message if message.startswith("space.") else "spec.space: " + message


def _check_resolution(
    space: SearchSpace,
    path: str,
    resolution: int,
    network: Architecture | None = None,
    what: str = "the space",
) -> None:
    """Every strided layer of ``network`` (the space's reference network when not given)
    must receive at least ``stride`` pixels."""
    try:
        net = plan(
            network or space.to_architecture(space.reference_decisions()),
            resolution=resolution,
            num_classes=space.num_classes,
            width=space.width,
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    strided = [layer for layer in net.layers if layer.stride > 1]
    if resolution < 2 or any(layer.in_size < layer.stride for layer in strided):
        count = 1 + len(strided)  # the stem strides too
        raise ValueError(
            f"{path}: {resolution} is too small for the {count} strided layers of {what} "
            f"(needs at least {2 ** (count - 1) + 1})"
        )


def _reference(spec: common_pb2.SearchSpec, space: SearchSpace) -> Architecture | None:
    """The network ``spec.reference`` names (default: the space's reference), checked to
    build at the space's resolution; None for "none"."""
    if not spec.reference:
        spec.reference = SPACE_REFERENCE
    if spec.reference == NO_REFERENCE:
        return None
    if spec.reference == SPACE_REFERENCE:
        return space.to_architecture(space.reference_decisions())
    try:
        network = references.get(spec.reference)
    except ValueError:
        known = ", ".join([SPACE_REFERENCE, *references.names(), NO_REFERENCE])
        raise ValueError(
            f"spec.reference: unknown network {spec.reference!r} (known: {known})"
        ) from None
    _check_resolution(space, "spec.reference", space.resolution, network, spec.reference)
    return network


def _budget(b: common_pb2.Budget) -> None:
    if b.max_trials < 1:
        raise ValueError(f"spec.budget.max_trials: must be >= 1, got {b.max_trials}")
    if b.max_trials > MAX_TRIALS_LIMIT:
        raise ValueError(f"spec.budget.max_trials: at most {MAX_TRIALS_LIMIT}, got {b.max_trials}")
    if b.parallel_trials < 0:
        raise ValueError(f"spec.budget.parallel_trials: must be >= 1, got {b.parallel_trials}")
    if b.parallel_trials == 0:
        b.parallel_trials = 1
    if b.parallel_trials > b.max_trials:
        raise ValueError(
            f"spec.budget.parallel_trials: {b.parallel_trials} exceeds max_trials {b.max_trials}"
        )
    if b.max_failed_trials < 0:
        raise ValueError(f"spec.budget.max_failed_trials: must be >= 0, got {b.max_failed_trials}")
    if b.max_failed_trials == 0:
        b.max_failed_trials = b.max_trials
    if b.max_attempts < 0:
        raise ValueError(f"spec.budget.max_attempts: must be >= 1, got {b.max_attempts}")
    if b.max_attempts == 0:
        b.max_attempts = DEFAULT_MAX_ATTEMPTS
    if not 0 <= b.keep_weights <= b.max_trials:
        raise ValueError(
            f"spec.budget.keep_weights: must be in 0..max_trials ({b.max_trials}), "
            f"got {b.keep_weights}"
        )


def _latency(
    lat: common_pb2.LatencySettings, resolution: int, device_classes: Collection[str]
) -> None:
    if not lat.device_class:
        lat.device_class = "host-cpu"
    if lat.device_class not in device_classes:
        known = ", ".join(sorted(device_classes)) or "none: no latency service reachable"
        raise ValueError(
            f"spec.latency.device_class: unknown device class {lat.device_class!r} (known: {known})"
        )
    for name in ("warmup_runs", "runs", "resolution", "threads"):
        if getattr(lat, name) < 0:
            raise ValueError(f"spec.latency.{name}: must be >= 0, got {getattr(lat, name)}")
    if lat.warmup_runs == 0:
        lat.warmup_runs = 5
    if lat.runs == 0:
        lat.runs = 50
    if lat.threads == 0:
        lat.threads = 1
    if lat.resolution == 0:
        lat.resolution = resolution
    elif lat.resolution < 2:
        raise ValueError(f"spec.latency.resolution: must be >= 2, got {lat.resolution}")

"""What is wrong with a search spec: every problem at once, each at its field path.

:func:`check_spec` is the one set of checks of a ``mnas.v1.SearchSpec``. ``mnas validate``,
``mnas search`` and ``mnas submit`` run it on a spec file before anything starts; the
controller runs it on every spec it is sent, adding what only its workers know: the data
set as the trainers report it (classes, resolution, examples), the device classes of the
latency services and the strategies it runs. Without those facts the checks that need
them are skipped, never failed: a data set or device class this machine does not know
may well be served by a cluster's workers (:func:`advise` warns instead).

Zero is "unset" for most numeric fields (proto3 cannot tell them apart), so zero takes the
default; :func:`explicit_zeros` finds the zeros a spec file writes out, which would be
silently replaced.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mnas import references
from mnas.arch import Activation, Architecture
from mnas.build import MAX_CLASSES, MAX_RESOLUTION, MAX_WIDTH
from mnas.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_DEVICE_CLASS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MIN_TRIALS,
    DEFAULT_NUM_CLASSES,
    DEFAULT_PRESET,
    DEFAULT_RESOLUTION,
    DEFAULT_RUNS,
    DEFAULT_STRATEGY,
    DEFAULT_VALIDATION_EXAMPLES,
    DEFAULT_WARMUP_RUNS,
    DEFAULT_WIDTH,
)
from mnas.errors import InvalidInput
from mnas.layers import plan
from mnas.space import PRESETS, SearchSpace, Stage, preset
from mnas.v1 import common_pb2

__all__ = [
    "BUILTIN_DATASETS",
    "FRONT_STRATEGY_NAMES",
    "MAX_TRIALS_LIMIT",
    "NO_REFERENCE",
    "SPACE_REFERENCE",
    "STRATEGY_NAMES",
    "Dataset",
    "Problem",
    "SpecError",
    "advise",
    "check_spec",
    "closest",
    "default_validation_examples",
    "explicit_zeros",
    "in_order",
    "merge",
    "search_space",
    "training_images",
    "unknown",
]

# Data sets every trainer serves without being told (a cluster's trainers may serve more).
BUILTIN_DATASETS = (DEFAULT_DATASET,)
# The strategies the controller runs (it checks against its own registry too).
STRATEGY_NAMES = ("evolution", "ppo", "random", "tpe")
# Those that can look for a front of accuracy against latency (objective kind pareto).
FRONT_STRATEGY_NAMES = ("random", "tpe")
# spec.reference: the space's own reference network, or none at all.
SPACE_REFERENCE = "space"
NO_REFERENCE = "none"

MAX_NAME_LENGTH = 200
MAX_TRIALS_LIMIT = 1_000_000
MAX_DEFAULT_VALIDATION = DEFAULT_VALIDATION_EXAMPLES

# Faster than any trainer trains any network of a space: a training that needs longer than
# its timeout even at these rates cannot finish (a bound, not an estimate).
MAX_IMAGES_PER_SECOND = 1_000_000
MAX_PIXELS_PER_SECOND = 2e9
# A training longer than a day at a fast trainer's rate, with no timeout, is worth a warning.
FAST_IMAGES_PER_SECOND = 10_000
LONG_TRAINING_SECONDS = 86_400.0

_CHOICES = ("ops", "kernels", "se_ratios", "skips", "filter_ratios", "layer_deltas")
# SearchSpace's reference-network errors name the decision; the spec's field holds it.
_REFERENCE_FIELDS = {
    "op": "ops",
    "kernel": "kernels",
    "se": "se_ratios",
    "skip": "skips",
    "filters": "filter_ratios",
    "layers": "layer_deltas",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: ``path`` is the snake_case field path inside the spec
    (``budget.max_trials``, ``space.stages[2].filters``; empty for the whole file, whose
    ``message`` then names it)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"spec.{self.path}: {self.message}" if self.path else self.message


class SpecError(InvalidInput):
    """A spec with problems; the message has one line per problem, each starting with
    its field path (``spec.budget.max_trials: ...``)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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


def default_validation_examples(examples: int) -> int:
    """Held-out examples when the spec gives none: 10,000, at most a sixth of the set."""
    return min(MAX_DEFAULT_VALIDATION, examples // 6)


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be (case aside), if one is close."""
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def unknown(
    what: str, value: str, known: Sequence[str], aliases: Mapping[str, str] | None = None
) -> str:
    """``unknown <what> 'x' (known: a, b); did you mean 'a'?``; ``aliases``: other names
    a misspelling may be close to, and the known name each stands for."""
    text = f"unknown {what} {value!r} (known: {', '.join(known) or 'none'})"
    meant = {name: name for name in known} | dict(aliases or {})
    guess = closest(value, meant)
    return text + (f"; did you mean {meant[guess]!r}?" if guess else "")


def merge(*groups: Iterable[Problem]) -> list[Problem]:
    """The problems of ``groups`` in order, less any at or under a path already reported
    (a field that failed to parse is not also reported as missing)."""
    out: list[Problem] = []
    for group in groups:
        for problem in group:
            if not any(_covers(seen.path, problem.path) for seen in out):
                out.append(problem)
    return out


def in_order(problems: Iterable[Problem], first: Sequence[str] = ()) -> list[Problem]:
    """``problems`` grouped by top-level section: the sections ``first`` names in its order
    (a file's, say), then the others in the spec's order."""
    order = [*first, *(f.name for f in common_pb2.SearchSpec.DESCRIPTOR.fields)]

    def section(problem: Problem) -> int:
        top = re.split(r"[.\[]", problem.path, maxsplit=1)[0]
        return order.index(top) if top in order else -1

    return sorted(problems, key=section)


def _covers(parent: str, path: str) -> bool:
    if not parent or not path:
        return parent == path
    return path == parent or path.startswith((parent + ".", parent + "["))


# --- numeric fields ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bound:
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):  # no field takes infinity or NaN
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.low == -math.inf:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


_REQUIRED = "required"


@dataclass(frozen=True)
class _Rule:
    """A numeric field's valid values; ``unset``: what 0 stands for (``_REQUIRED``: the
    field must be given), or None when 0 is a value like any other."""

    bound: _Bound
    unset: str | None = None


_AT_LEAST_1 = _Bound(1)
_NON_NEGATIVE = _Bound(0)
_POSITIVE = _Bound(0, low_open=True)
_FRACTION = _Bound(0, 1, high_open=True)
_STRATEGY_DEFAULT = "the strategy's default"

_RULES: dict[str, _Rule] = {
    # The bounds every service builds within (mnas.build): a finite but huge width
    # overflows the filter rounding, a huge resolution or head allocates without end.
    "space.resolution": _Rule(_Bound(2, MAX_RESOLUTION), "the data set's resolution"),
    "space.num_classes": _Rule(_Bound(1, MAX_CLASSES), "the data set's classes"),
    "space.width": _Rule(_Bound(0, MAX_WIDTH, low_open=True), str(DEFAULT_WIDTH)),
    "space.stem_filters": _Rule(_AT_LEAST_1, "32"),
    "space.head_filters": _Rule(_AT_LEAST_1, "1280"),
    "space.dropout": _Rule(_FRACTION),
    "objective.target_latency_seconds": _Rule(_POSITIVE, _REQUIRED),
    "objective.alpha": _Rule(_Bound(high=0)),
    "objective.beta": _Rule(_Bound(high=0)),
    "budget.max_trials": _Rule(_Bound(1, MAX_TRIALS_LIMIT), _REQUIRED),
    "budget.parallel_trials": _Rule(_AT_LEAST_1, "1"),
    "budget.max_failed_trials": _Rule(_AT_LEAST_1, "max_trials"),
    "budget.max_attempts": _Rule(_AT_LEAST_1, str(DEFAULT_MAX_ATTEMPTS)),
    "budget.keep_weights": _Rule(_NON_NEGATIVE),
    "training.epochs": _Rule(_AT_LEAST_1, "1, when steps is 0"),
    "training.steps": _Rule(_NON_NEGATIVE),
    "training.batch_size": _Rule(_AT_LEAST_1, str(DEFAULT_BATCH_SIZE)),
    "training.learning_rate": _Rule(
        _POSITIVE, "0.05 for SGD, 0.016 x batch_size / 256 for RMSProp"
    ),
    "training.train_examples": _Rule(_NON_NEGATIVE),
    "training.validation_examples": _Rule(_AT_LEAST_1, "10000, at most a sixth of the data set"),
    "training.momentum": _Rule(_FRACTION),
    "training.weight_decay": _Rule(_NON_NEGATIVE),
    "training.label_smoothing": _Rule(_FRACTION),
    "training.warmup_fraction": _Rule(_FRACTION),
    "training.timeout_seconds": _Rule(_NON_NEGATIVE),
    "training.evaluate_every_steps": _Rule(_NON_NEGATIVE),
    "training.evaluation_examples": _Rule(_AT_LEAST_1, "2000, at most the held-out examples"),
    "latency.warmup_runs": _Rule(_AT_LEAST_1, str(DEFAULT_WARMUP_RUNS)),
    "latency.runs": _Rule(_AT_LEAST_1, str(DEFAULT_RUNS)),
    "latency.resolution": _Rule(_Bound(2), "the space's resolution"),
    "latency.threads": _Rule(_AT_LEAST_1, "1"),
    "ppo.batch_size": _Rule(_AT_LEAST_1, _STRATEGY_DEFAULT),
    "ppo.learning_rate": _Rule(_POSITIVE, _STRATEGY_DEFAULT),
    "ppo.clip": _Rule(_Bound(0, 1, low_open=True, high_open=True), _STRATEGY_DEFAULT),
    "ppo.entropy_weight": _Rule(_NON_NEGATIVE, _STRATEGY_DEFAULT),
    "ppo.baseline_decay": _Rule(_FRACTION, _STRATEGY_DEFAULT),
    "ppo.epochs": _Rule(_AT_LEAST_1, _STRATEGY_DEFAULT),
    "ppo.hidden_size": _Rule(_AT_LEAST_1, _STRATEGY_DEFAULT),
    "evolution.population": _Rule(_Bound(2), _STRATEGY_DEFAULT),
    "evolution.sample_size": _Rule(_AT_LEAST_1, _STRATEGY_DEFAULT),
    "early_stopping.min_trials": _Rule(_AT_LEAST_1, str(DEFAULT_MIN_TRIALS)),
    "early_stopping.start_step": _Rule(_NON_NEGATIVE),
}

# The objective's fields a pareto objective leaves out.
_NOT_PARETO = ("objective.target_latency_seconds", "objective.alpha", "objective.beta")

_REQUIRED_MESSAGES = {
    "budget.max_trials": f"required: how many trials to run, in [1, {MAX_TRIALS_LIMIT}]",
    "objective.target_latency_seconds": "required: the target latency T in seconds, > 0",
}


def _numbers(spec: common_pb2.SearchSpec) -> list[Problem]:
    problems = []
    for path, rule in _RULES.items():
        section, name = path.split(".")
        message = getattr(spec, section)
        if message.DESCRIPTOR.fields_by_name[name].has_presence and not message.HasField(name):
            continue
        if path in _NOT_PARETO and spec.objective.kind == common_pb2.OBJECTIVE_KIND_PARETO:
            continue  # _objective says what is wrong
        value = getattr(message, name)
        if value == 0 and rule.unset is not None:
            if rule.unset == _REQUIRED and spec.HasField(section):  # type: ignore[arg-type]
                problems.append(Problem(path, _REQUIRED_MESSAGES[path]))
            continue
        if value not in rule.bound:
            problems.append(Problem(path, f"must be {rule.bound}, got {_num(value)}"))
    return problems


def explicit_zeros(document: object) -> list[Problem]:
    """The zeros a spec document writes out where 0 means "the default": each would be
    replaced without a word, so each is a problem."""
    problems: list[Problem] = []
    if not isinstance(document, Mapping):
        return problems
    for path, rule in _RULES.items():
        if rule.unset is None:
            continue
        section, name = path.split(".")
        node = _lookup(document, section)
        value = _lookup(node, name) if isinstance(node, Mapping) else None
        if not _is_zero(value):
            continue
        if path in _NOT_PARETO and str(_lookup(node, "kind")).lower().endswith("pareto"):
            continue  # _objective says what is wrong
        if path == "training.epochs" and not _is_zero(_lookup(node, "steps") or 0):
            continue  # steps is set: epochs is not used
        if rule.unset == _REQUIRED:
            problems.append(Problem(path, f"must be {rule.bound}, got 0"))
        elif 0 in rule.bound:
            problems.append(
                Problem(
                    path,
                    f"0 is read as unset, so the default ({rule.unset}) applies; omit it, or "
                    "give a positive value",
                )
            )
        else:
            problems.append(
                Problem(
                    path,
                    f"0 means the default ({rule.unset}); omit it, or give a value {rule.bound}",
                )
            )
    return problems


def _lookup(node: Mapping[Any, Any], snake: str) -> Any:
    camel = snake.split("_")[0] + "".join(p.title() for p in snake.split("_")[1:])
    return node.get(snake, node.get(camel))


def _is_zero(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str):
        try:
            return float(value) == 0
        except ValueError:
            return False
    return False


# --- the checks ----------------------------------------------------------------------------


def check_spec(
    spec: common_pb2.SearchSpec,
    *,
    dataset: Dataset | None = None,
    device_classes: Collection[str] | None = None,
    strategies: Collection[str] = STRATEGY_NAMES,
    front_strategies: Collection[str] = FRONT_STRATEGY_NAMES,
) -> list[Problem]:
    """Every problem of ``spec`` (empty: valid). ``dataset``: the data set as the trainers
    report it; ``device_classes``: the latency services' classes; either None when not
    known here, which skips the checks that need it. ``front_strategies``: those of
    ``strategies`` that can run a pareto objective."""
    problems = _numbers(spec)
    if len(spec.name) > MAX_NAME_LENGTH:
        problems.append(Problem("name", f"at most {MAX_NAME_LENGTH} characters"))
    problems += _objective(spec)
    if not spec.HasField("budget"):
        problems.append(Problem("budget", "required: budget.max_trials, how many trials to run"))
    problems += _budget(spec.budget)
    problems += _enums(spec)
    problems += _training(spec, dataset)
    if (
        spec.early_stopping.rule == common_pb2.EARLY_STOPPING_RULE_MEDIAN
        and spec.training.evaluate_every_steps == 0
    ):
        problems.append(
            Problem(
                "early_stopping.rule",
                "the median rule compares intermediate accuracies; set "
                "training.evaluate_every_steps > 0",
            )
        )
    space, space_problems = _space(spec.space)
    problems += space_problems
    resolution = spec.space.resolution or (dataset.resolution if dataset else 0)
    if space is not None:
        problems += _resolutions(spec, space, resolution)
    lat = spec.latency
    if device_classes is not None:
        device_class = lat.device_class or DEFAULT_DEVICE_CLASS
        if device_class not in device_classes:
            known = sorted(device_classes)
            text = (
                unknown("device class", device_class, known)
                if known
                else f"unknown device class {device_class!r} (known: none: no latency "
                "service reachable)"
            )
            problems.append(Problem("latency.device_class", text))
    if spec.strategy and spec.strategy not in strategies:
        problems.append(Problem("strategy", unknown("strategy", spec.strategy, sorted(strategies))))
    elif spec.objective.kind == common_pb2.OBJECTIVE_KIND_PARETO:
        strategy = spec.strategy or DEFAULT_STRATEGY
        if strategy not in front_strategies:
            problems.append(
                Problem(
                    "strategy",
                    f"{strategy} climbs one reward and cannot look for a front; a pareto "
                    f"objective needs one of: {', '.join(sorted(front_strategies))}",
                )
            )
    ev = spec.evolution
    if ev.population >= 2 and ev.sample_size > ev.population:
        problems.append(
            Problem(
                "evolution.sample_size",
                f"must be at most population ({ev.population}), got {ev.sample_size}",
            )
        )
    return in_order(merge(problems))


def _objective(spec: common_pb2.SearchSpec) -> list[Problem]:
    if not spec.HasField("objective"):
        return [
            Problem(
                "objective",
                "required: kind (soft, hard or absolute, with target_latency_seconds; or "
                "pareto, without)",
            )
        ]
    objective = spec.objective
    kind = objective.kind
    if kind == common_pb2.OBJECTIVE_KIND_UNSPECIFIED:
        return [Problem("objective.kind", "required: soft, hard, absolute or pareto")]
    if kind not in common_pb2.ObjectiveKind.values():
        return [
            Problem("objective.kind", f"unknown value {kind} (known: soft, hard, absolute, pareto)")
        ]
    if kind != common_pb2.OBJECTIVE_KIND_PARETO:
        return []
    set_fields = [name for name in ("alpha", "beta") if objective.HasField(name)]
    if objective.target_latency_seconds:
        set_fields.insert(0, "target_latency_seconds")
    return [
        Problem(
            f"objective.{name}",
            "not used by a pareto objective, which looks for the whole accuracy-latency "
            "front; leave it out",
        )
        for name in set_fields
    ]


def _budget(b: common_pb2.Budget) -> list[Problem]:
    problems = []
    if b.max_trials >= 1:
        if b.parallel_trials > b.max_trials:
            problems.append(
                Problem(
                    "budget.parallel_trials",
                    f"{b.parallel_trials} exceeds max_trials {b.max_trials}",
                )
            )
        if b.keep_weights > b.max_trials:
            problems.append(
                Problem(
                    "budget.keep_weights",
                    f"must be in 0..max_trials ({b.max_trials}), got {b.keep_weights}",
                )
            )
    return problems


_ENUMS: dict[str, tuple[str, Any]] = {
    "training.optimizer": ("optimizer", common_pb2.Optimizer),
    "training.schedule": ("schedule", common_pb2.LearningRateSchedule),
    "early_stopping.rule": ("rule", common_pb2.EarlyStoppingRule),
    "duplicates": ("duplicates", common_pb2.DuplicatePolicy),
}


def _enums(spec: common_pb2.SearchSpec) -> list[Problem]:
    problems = []
    for path, (name, enum) in _ENUMS.items():
        owner = spec if "." not in path else getattr(spec, path.split(".")[0])
        value = getattr(owner, name)
        if value not in enum.values():
            known = ", ".join(n for n in enum.keys() if not n.endswith("_UNSPECIFIED"))  # noqa: SIM118
            problems.append(Problem(path, f"unknown value {value} (known: {known})"))
    return problems


def _training(spec: common_pb2.SearchSpec, dataset: Dataset | None) -> list[Problem]:
    t = spec.training
    problems = []
    if dataset is not None:
        name = t.dataset or DEFAULT_DATASET
        if name != dataset.name:
            problems.append(Problem("training.dataset", f"{name!r}, but checked {dataset.name!r}"))
        if spec.space.num_classes and spec.space.num_classes < dataset.classes:
            problems.append(
                Problem(
                    "space.num_classes",
                    f"the data set has {dataset.classes} classes, got {spec.space.num_classes}",
                )
            )
        problems += _split(t, dataset)
    images = training_images(spec, dataset)
    seconds = _fastest_seconds(spec, dataset, images)
    if images and seconds is not None and 0 < t.timeout_seconds < seconds:
        count, how = images
        problems.append(
            Problem(
                "training.timeout_seconds",
                f"{t.timeout_seconds:g} s cannot fit a training of {count:,} images ({how}): "
                f"that takes over {seconds:,.0f} s even at "
                f"{_rate(spec, dataset):,.0f} images a second",
            )
        )
    return problems


def _split(t: common_pb2.Training, dataset: Dataset) -> list[Problem]:
    """The held-out and training examples, within the data set's examples."""
    examples = dataset.examples
    if examples is None or t.validation_examples < 0 or t.train_examples < 0:
        return []
    validation = t.validation_examples or default_validation_examples(examples)
    if validation >= examples:
        return [
            Problem(
                "training.validation_examples",
                f"{validation} leaves nothing to train on ({dataset.name} has {examples} "
                "training examples)",
            )
        ]
    if t.train_examples > examples - validation:
        return [
            Problem(
                "training.train_examples",
                f"{t.train_examples} exceeds the {examples - validation} examples not held out",
            )
        ]
    return []


def training_images(
    spec: common_pb2.SearchSpec, dataset: Dataset | None = None
) -> tuple[int, str] | None:
    """The images one trial's training goes through, and how that count comes about;
    None when the spec (and ``dataset``) do not say, or say something invalid."""
    t = spec.training
    if min(t.batch_size, t.steps, t.epochs, t.train_examples, t.validation_examples) < 0:
        return None
    batch = t.batch_size or DEFAULT_BATCH_SIZE
    train = t.train_examples or None
    if train is None and dataset is not None and dataset.examples is not None:
        validation = t.validation_examples or default_validation_examples(dataset.examples)
        train = dataset.examples - validation if dataset.examples > validation else None
    if t.steps > 0:
        per_step = min(batch, train) if train else batch
        return t.steps * per_step, f"{t.steps:,} steps of {per_step:,}"
    if train is None:
        return None
    epochs = t.epochs or 1
    return epochs * train, f"{epochs:,} epoch{'s' if epochs > 1 else ''} of {train:,}"


def _rate(spec: common_pb2.SearchSpec, dataset: Dataset | None) -> float:
    """Images a second no trainer exceeds at the spec's resolution (when known)."""
    resolution = spec.space.resolution or (dataset.resolution if dataset else 0)
    if resolution <= 0:
        return MAX_IMAGES_PER_SECOND
    return min(MAX_IMAGES_PER_SECOND, MAX_PIXELS_PER_SECOND / resolution**2)


def _fastest_seconds(
    spec: common_pb2.SearchSpec, dataset: Dataset | None, images: tuple[int, str] | None
) -> float | None:
    return images[0] / _rate(spec, dataset) if images else None


# --- the search space ----------------------------------------------------------------------


def search_space(
    s: common_pb2.SearchSpaceSpec,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    num_classes: int = DEFAULT_NUM_CLASSES,
) -> SearchSpace:
    """The space ``s`` describes, its omitted parts taking their defaults (the preset's
    stages, section 4.1's choices); ``ValueError`` names the first problem."""
    stages = (
        tuple(Stage(st.expansion, st.filters, st.layers, st.stride) for st in s.stages)
        if s.stages
        else preset(s.preset or DEFAULT_PRESET).stages
    )
    defaults = SearchSpace()
    chosen: dict[str, Any] = {
        name: tuple(getattr(s.choices, name)) if s.HasField("choices") else getattr(defaults, name)
        for name in _CHOICES
    }
    return SearchSpace(
        stages=stages,
        **chosen,
        stem_filters=s.stem_filters or defaults.stem_filters,
        head_filters=s.head_filters or defaults.head_filters,
        activation=Activation(s.activation) if s.activation else defaults.activation,
        dropout=s.dropout if s.HasField("dropout") else defaults.dropout,
        resolution=resolution,
        num_classes=num_classes,
        width=s.width or DEFAULT_WIDTH,
    )


def _space(s: common_pb2.SearchSpaceSpec) -> tuple[SearchSpace | None, list[Problem]]:
    """The space (None when it cannot be built) and the problems of its parts: each
    part's first one, the others taking their defaults meanwhile."""
    problems = []
    if s.preset and s.preset not in PRESETS:
        problems.append(Problem("space.preset", unknown("preset", s.preset, list(PRESETS))))
    known_activations = [a.value for a in Activation]
    if s.activation and s.activation not in known_activations:
        problems.append(
            Problem("space.activation", unknown("activation", s.activation, known_activations))
        )
    if s.HasField("choices"):
        for name in _CHOICES:
            if not getattr(s.choices, name):
                problems.append(
                    Problem(
                        f"space.choices.{name}",
                        "empty (a given 'choices' lists every decision's choices)",
                    )
                )
    defaults = SearchSpace(stages=PRESETS[DEFAULT_PRESET].stages)
    parts: dict[str, Any] = {
        "stages": (
            tuple(Stage(st.expansion, st.filters, st.layers, st.stride) for st in s.stages)
            if s.stages
            else PRESETS.get(s.preset or DEFAULT_PRESET, PRESETS[DEFAULT_PRESET]).stages
        )
    }
    if s.HasField("choices"):
        parts |= {n: tuple(getattr(s.choices, n)) for n in _CHOICES if getattr(s.choices, n)}
    settings: dict[str, Any] = {
        "stem_filters": s.stem_filters if s.stem_filters > 0 else defaults.stem_filters,
        "head_filters": s.head_filters if s.head_filters > 0 else defaults.head_filters,
        "activation": (
            Activation(s.activation) if s.activation in known_activations else defaults.activation
        ),
        "dropout": s.dropout if s.HasField("dropout") and 0 <= s.dropout < 1 else 0.2,
        "width": s.width if 0 < s.width <= MAX_WIDTH else DEFAULT_WIDTH,
        "num_classes": s.num_classes if 0 < s.num_classes <= MAX_CLASSES else DEFAULT_NUM_CLASSES,
    }
    for _ in range(len(parts) + 1):
        try:
            space = SearchSpace(**parts, **settings)
        except ValueError as err:
            path, message, culprit = _space_problem(str(err))
            problems.append(Problem(path, message))
            if culprit not in parts:
                return None, problems
            del parts[culprit]  # take the default, to find the other parts' problems
            continue
        # The strides, and so the resolution checks, depend on the stages alone.
        return (space if "stages" in parts else None), problems
    return None, problems


def _space_problem(message: str) -> tuple[str, str, str]:
    """A SearchSpace error as (field path, message, the part to blame)."""
    head, _, rest = message.partition(": ")
    if head.startswith("space.stages[") and " reference " in head:
        decision = head.rsplit(" ", 1)[-1]
        name = _REFERENCE_FIELDS.get(decision, "ops")
        where = head.removeprefix("space.").replace(" reference ", "'s reference ")
        return f"space.choices.{name}", f"{where}: {rest}", name
    if head.startswith("space.stages"):
        return head, rest, "stages"
    for name in _CHOICES:
        if head == f"space.{name}":
            return f"space.choices.{name}", rest, name
    if head.startswith("space."):
        return head, rest, head.removeprefix("space.")
    return "space", message, ""


def _resolutions(spec: common_pb2.SearchSpec, space: SearchSpace, resolution: int) -> list[Problem]:
    """The space's resolution, the latency resolution and the reference network's."""
    problems = []
    if resolution >= 1:
        problems += _too_small(space, "space.resolution", resolution)
    if spec.latency.resolution >= 1:
        problems += _too_small(space, "latency.resolution", spec.latency.resolution)
    name = spec.reference
    if name in ("", SPACE_REFERENCE, NO_REFERENCE):
        return problems
    if name not in references.names():
        known = [SPACE_REFERENCE, *references.names(), NO_REFERENCE]
        return [*problems, Problem("reference", unknown("network", name, known))]
    if resolution >= 1:
        problems += _too_small(space, "reference", resolution, references.get(name), name)
    return problems


def _too_small(
    space: SearchSpace,
    path: str,
    resolution: int,
    network: Architecture | None = None,
    what: str = "the space",
) -> list[Problem]:
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
        return [Problem(path, str(err))]
    strided = [layer for layer in net.layers if layer.stride > 1]
    if resolution < 2 or any(layer.in_size < layer.stride for layer in strided):
        count = 1 + len(strided)  # the stem strides too
        return [
            Problem(
                path,
                f"{resolution} is too small for the {count} strided layers of {what} "
                f"(needs at least {2 ** (count - 1) + 1})",
            )
        ]
    return []


# --- warnings ------------------------------------------------------------------------------


def advise(spec: common_pb2.SearchSpec, *, dataset: Dataset | None = None) -> list[Problem]:
    """What is valid but likely not meant: settings that nothing reads, a data set the
    local trainers do not serve by default, a training with no end in sight."""
    notes = []
    name = spec.training.dataset
    if name and name not in BUILTIN_DATASETS and "/" not in name:
        note = (
            f"{name!r} is not built in ({', '.join(BUILTIN_DATASETS)}): the trainers must "
            f"serve it (--dataset {name}=DIR) or it must be a directory on their disk"
        )
        guess = closest(name, BUILTIN_DATASETS)
        notes.append(
            Problem("training.dataset", note + (f"; did you mean {guess!r}?" if guess else ""))
        )
    strategy = spec.strategy or DEFAULT_STRATEGY
    for section in ("ppo", "evolution"):
        if spec.HasField(section) and strategy != section:
            notes.append(Problem(section, f"ignored: the strategy is {strategy}"))
    t = spec.training
    if t.steps > 0 and t.epochs > 0:
        notes.append(Problem("training.epochs", "ignored: steps is set"))
    images = training_images(spec, dataset)
    seconds = images[0] / FAST_IMAGES_PER_SECOND if images else 0.0
    if images and seconds > LONG_TRAINING_SECONDS and t.timeout_seconds == 0:
        notes.append(
            Problem(
                "training",
                f"each trial trains on {images[0]:,} images ({images[1]}): over "
                f"{seconds / 3600:,.0f} hours at {FAST_IMAGES_PER_SECOND:,} images a second, "
                "and no timeout_seconds is set",
            )
        )
    return notes

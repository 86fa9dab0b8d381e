"""Spec validation: defaults written in, and every bad field named."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from google.protobuf import json_format

from mnas import references
from mnas.errors import InvalidInput
from mnas.spec_check import FRONT_STRATEGY_NAMES, STRATEGY_NAMES, SpecError, check_spec
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2
from services.controller.spec import (
    Dataset,
    WorkersUnavailable,
    choose_dataset,
    resolve,
    stored_dataset,
)
from services.controller.strategies import STRATEGIES
from services.controller.strategy import PPOConfig
from services.reward.conversions import objective_from_proto

DEVICES = {"host-cpu"}
FASHION = Dataset(name="fashion-mnist", classes=10, resolution=28, examples=60000)


def spec(**overrides: Any) -> common_pb2.SearchSpec:
    document: dict[str, Any] = {
        "objective": {"kind": "OBJECTIVE_KIND_SOFT", "target_latency_seconds": 0.01},
        "budget": {"max_trials": 4},
    }
    for path, value in overrides.items():
        node = document
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return json_format.ParseDict(document, common_pb2.SearchSpec())


def test_defaults_are_written_in() -> None:
    resolved = resolve(spec(), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    s = resolved.spec
    assert s.strategy == "tpe"  # the default
    assert (s.budget.parallel_trials, s.budget.max_failed_trials, s.budget.max_attempts) == (
        1,
        4,
        3,
    )
    assert s.training.dataset == "fashion-mnist"
    assert (s.space.resolution, s.space.num_classes, s.space.width) == (28, 10, 1.0)
    assert len(s.space.stages) == 7
    assert list(s.space.choices.ops) == ["conv", "dconv", "mbconv3", "mbconv6"]
    assert (s.objective.alpha, s.objective.beta) == (-0.07, -0.07)
    assert (s.latency.device_class, s.latency.runs, s.latency.resolution) == ("host-cpu", 50, 28)
    assert resolved.space.size == 432**7
    t = s.training
    assert (t.optimizer, t.schedule) == (
        common_pb2.OPTIMIZER_SGD,
        common_pb2.LEARNING_RATE_SCHEDULE_COSINE,
    )
    assert (t.learning_rate, t.momentum, t.weight_decay, t.label_smoothing) == (
        0.05,
        0.9,
        4e-5,
        0.1,
    )
    assert (t.warmup_fraction, t.timeout_seconds, t.evaluation_examples) == (0.0, 0.0, 2000)
    assert not t.return_weights
    assert s.early_stopping.rule == common_pb2.EARLY_STOPPING_RULE_NONE
    assert s.early_stopping.min_trials == 3


def test_rmsprop_takes_mnasnet_defaults() -> None:
    resolved = resolve(
        spec(**{"training.optimizer": "OPTIMIZER_RMSPROP", "training.batch_size": 512}),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    t = resolved.spec.training
    assert t.learning_rate == pytest.approx(0.016 * 512 / 256)
    assert (t.weight_decay, t.warmup_fraction) == (1e-5, 0.05)


def test_keeping_weights_asks_trainers_for_them() -> None:
    resolved = resolve(
        spec(**{"budget.keep_weights": 2}),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert resolved.spec.training.return_weights


def test_hard_objective_defaults() -> None:
    resolved = resolve(
        spec(**{"objective.kind": "OBJECTIVE_KIND_HARD"}),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert (resolved.spec.objective.alpha, resolved.spec.objective.beta) == (0.0, -1.0)


CHOICES = {
    "ops": ["conv"],
    "kernels": [3],
    "se_ratios": [0.0],
    "skips": ["identity"],
    "filter_ratios": [1.0],
    "layer_deltas": [0],
}

BAD = [
    ("missing objective", {"objective": None}, "spec.objective"),
    ("zero budget", {"budget.max_trials": 0}, "spec.budget.max_trials"),
    ("negative budget", {"budget.max_trials": -3}, "spec.budget.max_trials"),
    ("parallel > max", {"budget.parallel_trials": 5}, "spec.budget.parallel_trials"),
    (
        "unknown op",
        {"space.choices": {**CHOICES, "ops": ["conv", "sepconv"]}},
        "spec.space.choices.ops",
    ),
    ("T = 0", {"objective.target_latency_seconds": 0.0}, "spec.objective.target_latency_seconds"),
    ("T < 0", {"objective.target_latency_seconds": -1.0}, "spec.objective.target_latency_seconds"),
    ("alpha > 0", {"objective.alpha": 0.1}, "spec.objective.alpha"),
    ("beta > 0", {"objective.beta": 1.0}, "spec.objective.beta"),
    ("not the data set checked", {"training.dataset": "cifar-10"}, "spec.training.dataset"),
    ("resolution too small", {"space.resolution": 16}, "spec.space.resolution"),
    ("unknown strategy", {"strategy": "ppo9000"}, "spec.strategy"),
    ("unknown device", {"latency.device_class": "pixel-1"}, "spec.latency.device_class"),
    ("empty choices", {"space.choices": {**CHOICES, "kernels": []}}, "spec.space.choices.kernels"),
    ("even kernel", {"space.choices": {**CHOICES, "kernels": [4]}}, "spec.space.choices.kernels"),
    ("no objective kind", {"objective.kind": None}, "spec.objective.kind"),
    ("negative failures", {"budget.max_failed_trials": -1}, "spec.budget.max_failed_trials"),
    ("bad activation", {"space.activation": "gelu"}, "spec.space.activation"),
    ("too few classes", {"space.num_classes": 5}, "spec.space.num_classes"),
    ("negative runs", {"latency.runs": -1}, "spec.latency.runs"),
    ("negative lr", {"training.learning_rate": -0.1}, "spec.training.learning_rate"),
    ("all held out", {"training.validation_examples": 60000}, "spec.training.validation_examples"),
    ("too many examples", {"training.train_examples": 55000}, "spec.training.train_examples"),
    ("momentum 1", {"training.momentum": 1.0}, "spec.training.momentum"),
    ("negative decay", {"training.weight_decay": -1e-5}, "spec.training.weight_decay"),
    ("warm-up 1", {"training.warmup_fraction": 1.0}, "spec.training.warmup_fraction"),
    ("smoothing 1", {"training.label_smoothing": 1.0}, "spec.training.label_smoothing"),
    ("negative timeout", {"training.timeout_seconds": -1}, "spec.training.timeout_seconds"),
    (
        "negative evaluations",
        {"training.evaluate_every_steps": -1},
        "spec.training.evaluate_every_steps",
    ),
    (
        "median without evaluations",
        {"early_stopping.rule": "EARLY_STOPPING_RULE_MEDIAN"},
        "spec.early_stopping.rule",
    ),
    ("negative min trials", {"early_stopping.min_trials": -1}, "spec.early_stopping.min_trials"),
    ("keep more weights than trials", {"budget.keep_weights": 5}, "spec.budget.keep_weights"),
]


@pytest.mark.parametrize(("overrides", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_specs_name_the_field(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve(spec(**overrides), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    assert str(info.value).startswith(needle), str(info.value)


def test_input_spec_is_not_modified() -> None:
    original = spec()
    copy = common_pb2.SearchSpec()
    copy.CopyFrom(original)
    resolve(original, dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    assert original == copy


@pytest.mark.parametrize("name", ["quickstart.yaml", "ppo.yaml"])
def test_examples_are_valid(name: str) -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / name).read_text()
    resolved = resolve(
        parse_spec(text), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES
    )
    assert resolved.spec.budget.max_trials >= 4


# --- the reference network -------------------------------------------------------------


def test_the_reference_defaults_to_the_space_s_own_network() -> None:
    resolved = resolve(spec(), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    space = resolved.space
    assert resolved.spec.reference == "space"
    assert resolved.reference == space.to_architecture(space.reference_decisions())


def test_a_named_reference_is_the_published_network() -> None:
    resolved = resolve(
        spec(reference="mnasnet-a1"),
        dataset=FASHION,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert resolved.spec.reference == "mnasnet-a1"
    assert resolved.reference == references.get("mnasnet-a1")


def test_no_reference() -> None:
    resolved = resolve(
        spec(reference="none"), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES
    )
    assert resolved.spec.reference == "none"
    assert resolved.reference is None


def test_an_unknown_reference_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        resolve(
            spec(reference="resnet-50"),
            dataset=FASHION,
            device_classes=DEVICES,
            strategies=STRATEGIES,
        )
    message = str(info.value)
    assert message.startswith("spec.reference: unknown network 'resnet-50' (known: "), message
    for name in ("space", "none", *references.names()):
        assert name in message


def test_a_reference_that_cannot_take_the_space_s_resolution_is_refused() -> None:
    """One stride-1 stage builds at 8 pixels; MnasNet-A1's five strided layers need 17."""
    shallow = {
        "space.stages": [{"expansion": 1, "filters": 16, "layers": 1, "stride": 1}],
        "space.choices": {**CHOICES, "ops": ["dconv"]},
        "space.resolution": 8,
        "latency.resolution": 8,
    }
    resolve(spec(**shallow), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    with pytest.raises(ValueError) as info:
        resolve(
            spec(**shallow, reference="mnasnet-a1"),
            dataset=FASHION,
            device_classes=DEVICES,
            strategies=STRATEGIES,
        )
    assert str(info.value).startswith("spec.reference: 8 is too small"), str(info.value)
    assert "mnasnet-a1" in str(info.value) and "at least 17" in str(info.value)


# --- the data set, as the trainers report it --------------------------------------------

CIFAR = Dataset(name="cifar10", classes=10, resolution=32, examples=50000)


def test_the_data_set_is_what_the_trainers_report() -> None:
    offers = {
        "a:1": {"fashion-mnist": FASHION},
        "b:1": {"fashion-mnist": FASHION, "cifar10": CIFAR},
    }
    assert choose_dataset("", offers, {}) == FASHION
    assert choose_dataset("cifar10", offers, {}) == CIFAR  # a trainer that lacks it is no veto
    resolved = resolve(
        spec(**{"training.dataset": "cifar10"}),
        dataset=CIFAR,
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert (resolved.spec.space.resolution, resolved.spec.space.num_classes) == (32, 10)
    assert resolved.spec.training.validation_examples == 50000 // 6


def test_a_data_set_no_trainer_serves_is_refused_listing_what_they_offer() -> None:
    offers = {"a:1": {"fashion-mnist": FASHION}, "b:1": {"cifar10": CIFAR}}
    problems = {"a:1": "training.dataset: unknown data set 'cifar100'"}
    with pytest.raises(ValueError) as info:
        choose_dataset("cifar100", offers, problems)
    message = str(info.value)
    assert message.startswith("spec.training.dataset: no trainer serves 'cifar100'")
    assert "cifar10 (10 classes, 32x32, 50000 examples)" in message
    assert "fashion-mnist (10 classes, 28x28, 60000 examples)" in message
    assert "trainer a:1: training.dataset: unknown data set 'cifar100'" in message


def test_no_trainer_answering_is_unavailable_not_a_bad_spec() -> None:
    with pytest.raises(WorkersUnavailable, match=r"^spec\.training\.dataset: no trainer answered"):
        choose_dataset("fashion-mnist", {}, {"a:1": "UNIMPLEMENTED: ListDatasets"})
    assert not issubclass(WorkersUnavailable, ValueError)


def test_trainers_that_disagree_about_a_data_set_are_refused() -> None:
    other = Dataset(name="fashion-mnist", classes=10, resolution=28, examples=1000)
    with pytest.raises(ValueError, match="trainers disagree about 'fashion-mnist'"):
        choose_dataset(
            "fashion-mnist",
            {"a:1": {"fashion-mnist": FASHION}, "b:1": {"fashion-mnist": other}},
            {},
        )


def test_a_stored_spec_resolves_again_without_asking_any_trainer() -> None:
    first = resolve(spec(), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    again = resolve(
        first.spec,
        dataset=stored_dataset(first.spec),
        device_classes=DEVICES,
        strategies=STRATEGIES,
    )
    assert again.spec == first.spec


# --- the same checks as `mnas validate`, every problem at once ------------------------------


def test_every_problem_is_refused_at_once_one_line_each() -> None:
    bad = spec(
        **{
            "budget.parallel_trials": 5,
            "training.momentum": 1.0,
            "latency.device_class": "pixel-1",
            "strategy": "ppo9000",
        }
    )
    with pytest.raises(SpecError) as info:
        resolve(bad, dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    assert [line.split(":")[0] for line in str(info.value).splitlines()] == [
        "spec.budget.parallel_trials",
        "spec.training.momentum",
        "spec.latency.device_class",
        "spec.strategy",
    ]
    assert isinstance(info.value, InvalidInput)


@pytest.mark.parametrize(("overrides", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_the_controller_refuses_what_the_offline_check_refuses_and_more(
    overrides: dict[str, Any], needle: str
) -> None:
    """`mnas validate` and the controller run one set of checks: the controller's
    problems are the offline ones plus those only the workers' facts show."""
    bad = spec(**overrides)
    offline = {p.path for p in check_spec(bad)}
    with pytest.raises(SpecError) as info:
        resolve(bad, dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES)
    served = {p.path for p in info.value.problems}
    assert offline <= served
    assert needle.removeprefix("spec.") in served


@pytest.mark.parametrize(
    "name", ["quickstart.yaml", "ppo.yaml", "early_stopping.yaml", "pareto.yaml"]
)
def test_a_resolved_spec_passes_the_checks_again(name: str) -> None:
    """A controller restarted on its store checks each stored spec again."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / name).read_text()
    resolved = resolve(
        parse_spec(text), dataset=FASHION, device_classes=DEVICES, strategies=STRATEGIES
    )
    stored = stored_dataset(resolved.spec)
    assert check_spec(resolved.spec, dataset=stored, device_classes=DEVICES) == []


def test_the_offline_strategy_names_are_the_controller_s() -> None:
    assert set(STRATEGY_NAMES) == set(STRATEGIES)
    front = {name for name, cls in STRATEGIES.items() if cls.searches_front}
    assert set(FRONT_STRATEGY_NAMES) == front


# Values at and around each range's ends; the offline check and the domain objects that
# the controller builds must agree on every one.
EDGES = [-1.0, -0.5, 0.0, 1e-9, 0.5, 0.999, 1.0, 1.5, 2.0, 3.0, math.inf, math.nan]


def _with(section: str, name: str, value: float) -> common_pb2.SearchSpec:
    out = spec()
    setattr(getattr(out, section), name, value)
    return out


def _refused(check: Any) -> bool:
    try:
        check()
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(
    "name", ["batch_size", "learning_rate", "clip", "entropy_weight", "baseline_decay", "epochs"]
)
def test_ppo_ranges_agree_with_the_strategy_s(name: str) -> None:
    integer = isinstance(getattr(PPOConfig(), name), int)
    for value in EDGES:
        if value == 0 or (integer and not (math.isfinite(value) and value == int(value))):
            continue  # 0: the default; fractions do not fit an integer field
        given = int(value) if integer else value
        offline = [p for p in check_spec(_with("ppo", name, given)) if p.path.startswith("ppo")]
        config = dataclasses.replace(PPOConfig(), **{name: given})  # type: ignore[arg-type]
        assert bool(offline) == _refused(config.validate), (name, given)


@pytest.mark.parametrize("name", ["alpha", "beta", "target_latency_seconds"])
def test_objective_ranges_agree_with_the_reward_s(name: str) -> None:
    for value in EDGES:
        if value == 0 and name == "target_latency_seconds":
            continue  # 0: unset, reported as required
        given = _with("objective", name, value)
        offline = [p for p in check_spec(given) if p.path.startswith("objective")]
        refused = _refused(lambda: objective_from_proto(given.objective))  # noqa: B023
        assert bool(offline) == refused, (name, value)


def test_a_data_set_no_trainer_serves_suggests_the_closest_one() -> None:
    with pytest.raises(
        ValueError, match=r"no trainer serves 'cifar-10' \(did you mean 'cifar10'\?\)"
    ):
        choose_dataset("cifar-10", {"a:1": {"cifar10": CIFAR, "fashion-mnist": FASHION}}, {})

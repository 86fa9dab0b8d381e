"""Spec files checked offline: every problem at once, at its snake_case path, with the
closest valid name for a misspelling; the examples all pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnas.spec_check import Dataset, Problem, SpecError, check_spec, closest, merge
from mnas.specfile import check_document, check_file, load_spec, parse_spec, spec_from_document
from mnas.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
objective: {kind: soft, target_latency_seconds: 0.01}
budget: {max_trials: 4}
"""
FASHION = Dataset(name="fashion-mnist", classes=10, resolution=28, examples=60000)


def errors(text: str) -> dict[str, str]:
    """The errors of a spec's text, by path."""
    checked = check_document(yaml.safe_load(text))
    return {p.path: p.message for p in checked.errors}


def warnings(text: str) -> dict[str, str]:
    return {p.path: p.message for p in check_document(yaml.safe_load(text)).warnings}


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    checked = check_file(path)
    assert checked.errors == ()
    assert checked.spec == load_spec(path)


def test_a_good_spec_has_no_problems() -> None:
    assert errors(GOOD) == {}
    assert warnings(GOOD) == {}


# --- what issue 15 measured ----------------------------------------------------------------


def test_a_misspelt_field_is_named_in_snake_case_with_the_closest_one() -> None:
    found = errors(GOOD.replace("max_trials", "max_trial"))
    assert found["budget.max_trial"] == "unknown field; did you mean 'max_trials'?"
    assert "maxTrials" not in " ".join(found.values())


def test_camel_case_names_are_accepted_and_reported_in_snake_case() -> None:
    assert errors(GOOD.replace("max_trials: 4", "maxTrials: 4")) == {}
    found = errors(GOOD.replace("max_trials: 4", "maxTrials: many"))
    assert found == {"budget.max_trials": "expected an integer, got 'many'"}


def test_a_field_in_the_wrong_section_names_where_it_belongs() -> None:
    found = errors(GOOD + "keep_weights: 2\n")
    assert found["keep_weights"] == "unknown field here; did you mean 'budget.keep_weights'?"


def test_an_omitted_budget_is_reported_as_omitted_not_as_zero() -> None:
    found = errors("objective: {kind: soft, target_latency_seconds: 0.01}")
    assert list(found) == ["budget"]
    assert found["budget"].startswith("required: budget.max_trials")
    assert "got 0" not in found["budget"]
    found = errors("objective: {kind: soft, target_latency_seconds: 0.01}\nbudget: {}")
    assert found["budget.max_trials"].startswith("required: how many trials")


def test_a_zero_written_out_where_zero_means_the_default_is_refused() -> None:
    found = errors(GOOD + "space: {width: 0}\ntraining: {batch_size: 0}\n")
    assert found["space.width"] == "0 means the default (1.0); omit it, or give a value in (0, 8]"
    assert found["training.batch_size"].startswith("0 means the default (128)")
    found = errors(GOOD.replace("max_trials: 4", "max_trials: 0"))
    assert found == {"budget.max_trials": "must be in [1, 1000000], got 0"}


def test_build_fields_past_what_any_service_builds_are_refused() -> None:
    """A finite but huge width once got past the checks and overflowed the filter
    rounding (found by hypothesis: width 5.6e305)."""
    found = errors(GOOD + "space: {width: 5.6177910464447375e+305, resolution: 4096}\n")
    assert found["space.width"] == "must be in (0, 8], got 5.61779e+305"
    assert found["space.resolution"] == "must be in [2, 2048], got 4096"
    found = errors(GOOD + "space: {num_classes: 100001}\n")
    assert found == {"space.num_classes": "must be in [1, 100000], got 100001"}
    assert errors(GOOD + "space: {width: 8, resolution: 2048}\n") == {}


def test_zeros_that_are_values_are_accepted() -> None:
    text = GOOD + "training: {timeout_seconds: 0, train_examples: 0, steps: 0}\nseed: 0\n"
    assert errors(text) == {}
    assert errors(GOOD + "training: {steps: 40, epochs: 0}\n") == {}


def test_a_training_that_cannot_end_within_its_timeout_is_refused() -> None:
    text = GOOD + (
        "training: {epochs: 100000, train_examples: 50000, timeout_seconds: 600}\n"
        "space: {resolution: 28, preset: small-images}\n"
    )
    message = errors(text)["training.timeout_seconds"]
    assert "5,000,000,000 images (100,000 epochs of 50,000)" in message
    # The same training with no timeout is allowed, with a warning.
    lengthy = text.replace(", timeout_seconds: 600", "")
    assert errors(lengthy) == {}
    assert warnings(lengthy)["training"].endswith(
        "over 139 hours at 10,000 images a second, and no timeout_seconds is set"
    )
    assert warnings(lengthy.replace("epochs: 100000", "epochs: 10")) == {}
    # A short one fits.
    assert errors(text.replace("epochs: 100000", "epochs: 1")) == {}


def test_a_data_set_not_built_in_is_a_warning_not_an_error() -> None:
    """A cluster's trainers may serve any name (--dataset NAME=DIR): only they can say."""
    text = GOOD + "training: {dataset: cifar100}\n"
    assert errors(text) == {}
    assert "--dataset cifar100=DIR" in warnings(text)["training.dataset"]
    near = warnings(GOOD + "training: {dataset: fashion_mnist}\n")["training.dataset"]
    assert near.endswith("did you mean 'fashion-mnist'?")
    assert warnings(GOOD + "training: {dataset: /data/cifar-100}\n") == {}


def test_misspelt_enum_values_suggest_the_valid_name() -> None:
    found = errors(
        GOOD.replace("kind: soft", "kind: sofft")
        + "training: {optimizer: rmsprop, schedule: LEARNING_RATE_SCHEDULE_COSIN}\n"
    )
    assert found["objective.kind"].endswith("did you mean 'soft'?")
    assert found["training.optimizer"].endswith("did you mean 'OPTIMIZER_RMSPROP'?")
    assert found["training.schedule"].endswith("did you mean 'LEARNING_RATE_SCHEDULE_COSINE'?")


def test_misspelt_names_of_strategies_presets_and_networks_suggest_the_valid_one() -> None:
    found = errors(
        GOOD + "strategy: evolutoin\nreference: mnasnet-a2\n"
        "space: {preset: small-image, activation: relu7}\n"
    )
    assert found["strategy"].endswith("did you mean 'evolution'?")
    assert found["reference"].startswith("unknown network 'mnasnet-a2' (known: space, ")
    assert found["space.preset"].endswith("did you mean 'small-images'?")
    assert found["space.activation"].startswith("unknown activation 'relu7' (known: relu, relu6")


# --- every problem at once ---------------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    text = """
objective: {kind: hard, target_latency_seconds: -1, alpha: 0.5}
budget: {max_trials: 4, parallel_trials: 9, max_attemps: 2}
training: {batch_size: -8, momentum: 1.5, optimizer: adam}
latency: {runs: -1, resolution: 8}
space: {resolution: 8, stages: [{expansion: 6, filters: 16, layers: 0, stride: 2}]}
early_stopping: {rule: EARLY_STOPPING_RULE_MEDIAN}
strategy: annealing
"""
    assert set(errors(text)) == {
        "objective.target_latency_seconds",
        "objective.alpha",
        "budget.parallel_trials",
        "budget.max_attemps",
        "training.batch_size",
        "training.momentum",
        "training.optimizer",
        "latency.runs",
        "space.stages[0].layers",
        "early_stopping.rule",
        "strategy",
    }


def test_each_part_of_the_space_reports_its_own_problem() -> None:
    text = GOOD + (
        "space: {choices: {ops: [dconv, mbconv6, sepconv], kernels: [3, 4], se_ratios: [0], "
        "skips: [identity, nope], filter_ratios: [1], layer_deltas: []}}\n"
    )
    found = errors(text)
    assert set(found) == {
        "space.choices.ops",
        "space.choices.kernels",
        "space.choices.skips",
        "space.choices.layer_deltas",
    }
    assert "'sepconv'" in found["space.choices.ops"]
    assert "4 is not an odd positive integer" in found["space.choices.kernels"]


def test_resolutions_too_small_for_the_strides_are_refused_where_given() -> None:
    found = errors(GOOD + "space: {resolution: 16}\nlatency: {resolution: 8}\n")
    assert found["space.resolution"].startswith("16 is too small for the 5 strided layers")
    assert found["latency.resolution"].startswith("8 is too small")
    # Omitted, the resolution is the data set's: only the controller knows it.
    assert errors(GOOD) == {}


def test_wrong_types_are_each_reported() -> None:
    text = """
name: 12
objective: soft
budget: {max_trials: 2.5, parallel_trials: true}
space: {stages: {filters: 16}, choices: {kernels: [3, five]}}
seed: one
"""
    found = errors(text)
    assert found["name"] == "expected a string (quote it), got 12"
    assert found["objective"] == "expected a mapping of fields, got 'soft'"
    assert found["budget.max_trials"] == "expected an integer, got 2.5"
    assert found["budget.parallel_trials"] == "expected an integer, got true"
    assert found["space.stages"] == "expected a list of mappings, got a mapping"
    assert found["space.choices.kernels[1]"] == "expected an integer, got 'five'"
    assert found["seed"] == "expected an integer, got 'one'"


def test_a_field_given_twice_is_refused() -> None:
    found = errors(GOOD.replace("max_trials: 4", "max_trials: 4, maxTrials: 5"))
    assert found == {"budget.max_trials": "given twice (as max_trials and maxTrials)"}


def test_parsing_reports_every_field_that_does_not_map_but_checks_nothing_else() -> None:
    """The controller checks what it is sent; parse_spec only maps."""
    assert parse_spec("budget: {max_trials: 0}") == common_pb2.SearchSpec(
        budget=common_pb2.Budget()
    )
    with pytest.raises(SpecError) as info:
        spec_from_document({"budget": {"max_trial": 1}, "objectiv": {}})
    assert [p.path for p in info.value.problems] == ["budget.max_trial", "objectiv"]
    assert str(info.value).splitlines() == [
        "spec.budget.max_trial: unknown field; did you mean 'max_trials'?",
        "spec.objectiv: unknown field; did you mean 'objective'?",
    ]


def test_load_spec_refuses_a_bad_file_listing_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("budget: {max_trials: 0}\nstrategy: ppo9000\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert isinstance(info.value, ValueError)
    assert [line.split(":")[0] for line in str(info.value).splitlines()] == [
        "spec.budget.max_trials",
        "spec.strategy",
        "spec.objective",
    ]


def test_unreadable_and_malformed_files_are_problems_not_exceptions(tmp_path: Path) -> None:
    missing = check_file(tmp_path / "none.yaml")
    assert missing.spec is None
    assert missing.errors[0].message.endswith("cannot read: No such file or directory")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [")
    assert "malformed YAML at line 1" in check_file(bad).errors[0].message
    bad.write_bytes(b"\xff\xfe")
    assert check_file(bad).errors[0].message.endswith("cannot read: not UTF-8 text")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert (
        check_file(listed).errors[0].message.endswith("expected a mapping of spec fields, got list")
    )


# --- what the workers know ---------------------------------------------------------------


def test_the_workers_facts_add_their_checks() -> None:
    spec = parse_spec(
        GOOD + "training: {validation_examples: 60000}\nlatency: {device_class: pixel-1}\n"
    )
    assert check_spec(spec) == []  # offline: not known here, so not refused
    found = check_spec(spec, dataset=FASHION, device_classes={"host-cpu"})
    assert [p.path for p in found] == ["training.validation_examples", "latency.device_class"]
    assert "fashion-mnist has 60000 training examples" in found[0].message


def test_the_data_set_s_resolution_is_checked_when_the_spec_leaves_it_out() -> None:
    spec = parse_spec(GOOD + "training: {dataset: tiny}\n")
    assert check_spec(spec) == []
    # The mnasnet preset's 5 strided layers need 17 pixels.
    tiny = Dataset(name="tiny", classes=10, resolution=16, examples=1000)
    (problem,) = check_spec(spec, dataset=tiny)
    assert problem.path == "space.resolution"
    assert problem.message.startswith("16 is too small")


def test_closest_and_merge() -> None:
    assert closest("max_trial", ["max_trials", "parallel_trials"]) == "max_trials"
    assert closest("RANDOM", ["random", "ppo"]) == "random"
    assert closest("xyz", ["random", "ppo"]) is None
    merged = merge(
        [Problem("budget", "not a mapping")],
        [Problem("budget.max_trials", "required"), Problem("budgets", "unknown")],
    )
    assert [p.path for p in merged] == ["budget", "budgets"]


# --- a pareto objective (no target) ---------------------------------------------------------

PARETO = """
objective: {kind: pareto}
budget: {max_trials: 4}
"""


def test_a_pareto_objective_needs_no_target() -> None:
    assert errors(PARETO) == {}
    assert errors(PARETO + "strategy: random\n") == {}
    spec = parse_spec(PARETO)
    assert spec.objective.kind == common_pb2.OBJECTIVE_KIND_PARETO
    assert not spec.objective.HasField("alpha")


def test_a_pareto_objective_refuses_a_target_and_exponents_naming_each() -> None:
    found = errors(
        PARETO.replace("{kind: pareto}", "{kind: pareto, target_latency_seconds: 0.01, beta: -1}")
    )
    assert set(found) == {"objective.target_latency_seconds", "objective.beta"}
    assert "not used by a pareto objective" in found["objective.beta"]
    # an explicit zero target is still "leave it out", not "must be > 0"
    found = errors(PARETO.replace("{kind: pareto}", "{kind: pareto, target_latency_seconds: 0}"))
    assert found == {}


@pytest.mark.parametrize("strategy", ["ppo", "evolution"])
def test_a_pareto_objective_refuses_a_strategy_that_climbs_one_reward(strategy: str) -> None:
    found = errors(PARETO + f"strategy: {strategy}\n")
    assert found == {
        "strategy": f"{strategy} climbs one reward and cannot look for a front; a pareto "
        "objective needs one of: random, tpe"
    }


def test_without_a_kind_the_objective_names_all_four() -> None:
    found = errors(GOOD.replace("kind: soft, ", ""))
    assert found == {"objective.kind": "required: soft, hard, absolute or pareto"}

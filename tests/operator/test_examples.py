"""Every example MnasSearch validates against the CRD's own openAPIV3Schema (offline, with
jsonschema: see crdschema.py for what stands in for the API server) and its spec parses
into a SearchSpec; malformed ones are refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from google.protobuf import json_format

from mnas.specfile import load_spec
from mnas.v1 import common_pb2
from services.operator.reconcile import Rejected, parse_spec
from tests.operator.crdschema import ROOT, validator

EXAMPLES = sorted((ROOT / "examples/k8s").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"search.yaml", "ppo.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_parses(path: Path) -> None:
    document = _load(path)
    assert document["apiVersion"] == "mnas.dev/v1alpha1"
    assert document["kind"] == "MnasSearch"
    validator().validate(document)
    spec = parse_spec(document["spec"])
    assert spec.budget.max_trials > 0
    assert spec.training.dataset == "fashion-mnist"


@pytest.mark.parametrize(
    ("resource", "spec_file"),
    [("search.yaml", "quickstart.yaml"), ("ppo.yaml", "ppo.yaml")],
)
def test_examples_match_their_spec_files(resource: str, spec_file: str) -> None:
    spec = parse_spec(_load(ROOT / "examples/k8s" / resource)["spec"])
    assert spec == load_spec(ROOT / "examples" / spec_file)


def _quickstart() -> dict[str, Any]:
    return copy.deepcopy(_load(ROOT / "examples/k8s/search.yaml"))


def _with(change: str) -> dict[str, Any]:
    document = _quickstart()
    spec = document["spec"]
    if change == "unknown field":
        spec["budget"]["max_trails"] = 3
    elif change == "camelCase name":
        spec["budget"]["maxTrials"] = spec["budget"].pop("max_trials")
    elif change == "wrong type":
        spec["budget"]["max_trials"] = "ten"
    elif change == "float for integer":
        spec["training"]["epochs"] = 1.5
    elif change == "bad enum":
        spec["objective"]["kind"] = "OBJECTIVE_KIND_FASTEST"
    elif change == "malformed int64":
        spec["seed"] = "one"
    elif change == "object for list":
        spec["space"]["stages"] = {"filters": 16}
    elif change == "no spec":
        del document["spec"]
    elif change == "unknown status state":
        document["status"] = {"state": "Paused"}
    return document


MALFORMED = [
    "unknown field",
    "camelCase name",
    "wrong type",
    "float for integer",
    "bad enum",
    "object for list",
    "no spec",
    "unknown status state",
]


@pytest.mark.parametrize("change", MALFORMED)
def test_malformed_resource_is_rejected(change: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(_with(change))


@pytest.mark.parametrize("change", ["unknown field", "wrong type", "bad enum", "malformed int64"])
def test_malformed_spec_does_not_parse_either(change: str) -> None:
    """What the schema refuses, the operator refuses too (an emulated API server, or one
    without strict field validation, may let it through)."""
    with pytest.raises(Rejected):
        parse_spec(_with(change)["spec"])


def test_int64_as_integer_or_string() -> None:
    for seed in (7, "7"):
        document = _quickstart()
        document["spec"]["seed"] = seed
        validator().validate(document)
        assert parse_spec(document["spec"]).seed == 7
    assert json_format.MessageToDict(common_pb2.SearchSpec(seed=7))["seed"] == "7"


def test_objective_kind_takes_the_spec_files_short_names() -> None:
    """``kind: soft`` is valid in a MnasSearch as in a spec file, and means the same."""
    for alias, name in (("soft", "OBJECTIVE_KIND_SOFT"), ("hard", "OBJECTIVE_KIND_HARD")):
        document = _quickstart()
        document["spec"]["objective"]["kind"] = alias
        validator().validate(document)
        parsed = parse_spec(document["spec"])
        assert common_pb2.ObjectiveKind.Name(parsed.objective.kind) == name

"""The MnasSearch CRD: generated from SearchSpec, checked in fresh, structural, closed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from mnas.specfile import KIND_ALIASES
from mnas.v1 import common_pb2
from services.operator import crd as crd_module
from services.operator.resource import FINALIZER, GROUP, KIND, PLURAL, VERSION
from tests.operator.crdschema import ROOT, checked_in_crd, openapi_schema


def test_checked_in_crd_is_what_the_generator_writes() -> None:
    assert (ROOT / crd_module.CRD_PATH).read_text() == crd_module.render(), (
        "the checked-in CRD is stale: run scripts/gen_crd.sh"
    )


def test_names_scope_and_version() -> None:
    crd = checked_in_crd()
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}" == "mnassearches.mnas.dev"
    spec = crd["spec"]
    assert spec["group"] == "mnas.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": KIND,
        "listKind": "MnasSearchList",
        "plural": "mnassearches",
        "singular": "mnassearch",
        "shortNames": ["mnas"],
        "categories": ["mnas"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert FINALIZER == "mnas.dev/cancel-search"


def _nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def test_schema_is_structural_and_closed() -> None:
    """Every node has a type (or is int-or-string), no node preserves unknown fields, and
    value validations (anyOf) carry no types but the int-or-string pair."""
    schema = openapi_schema(checked_in_crd())
    nodes = list(_nodes(schema))
    assert len(nodes) > 50
    for path, node in nodes:
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert "additionalProperties" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            # The API server's one allowed shape (apiextensions' structural rules compare
            # the branches exactly: nothing else may sit in them).
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            path
        )
        if node["type"] == "object" and path != ".metadata":
            assert node.get("properties"), path


def test_spec_schema_mirrors_every_searchspec_field() -> None:
    spec = openapi_schema(checked_in_crd())["properties"]["spec"]

    def check(message: Any, node: dict[str, Any], path: str) -> None:
        assert set(node["properties"]) == {f.name for f in message.fields}, path
        for field in message.fields:
            child = node["properties"][field.name]
            if field.is_repeated:
                assert child["type"] == "array", path + field.name
                child = child["items"]
            if field.message_type is not None:
                check(field.message_type, child, f"{path}{field.name}.")
            elif field.enum_type is not None:
                names = [v.name for v in field.enum_type.values]
                if field.full_name == "mnas.v1.Objective.kind":  # spec files' short names
                    names += sorted(KIND_ALIASES)
                assert child["enum"] == names, path + field.name

    check(common_pb2.SearchSpec.DESCRIPTOR, spec, "spec.")
    assert spec["properties"]["seed"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["objective"]["properties"]["target_latency_seconds"] == {
        "type": "number"
    }


def test_spec_is_immutable_by_a_cel_rule() -> None:
    spec = openapi_schema(checked_in_crd())["properties"]["spec"]
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf"
    assert "immutable" in rule["message"]


def test_status_subresource_conditions_and_printer_columns() -> None:
    (version,) = checked_in_crd()["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"state", "searchId", "progress", "conditions", "bestTrial"} <= set(status)
    assert {"trials", "completed", "failed", "stopped"} <= set(status)
    assert set(status["bestTrial"]["properties"]) >= {
        "number",
        "accuracy",
        "latencySeconds",
        "reward",
        "architecture",
    }
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
    }
    assert "observedGeneration" in condition["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["State"]["jsonPath"] == ".status.state"
    assert columns["Trials"]["jsonPath"] == ".status.progress"
    assert columns["Best"]["jsonPath"] == ".status.bestTrial.reward"
    assert (columns["Age"]["type"], columns["Age"]["jsonPath"]) == (
        "date",
        ".metadata.creationTimestamp",
    )


def test_the_generator_writes_a_file(tmp_path: Any) -> None:
    target = tmp_path / "crd.yaml"
    assert crd_module.main([str(target)]) == 0
    assert yaml.safe_load(target.read_text()) == crd_module.crd()


def test_kustomization_lists_the_crd() -> None:
    kustomization = yaml.safe_load((ROOT / "k8s/components/crd/kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [crd_module.CRD_PATH.name]
    assert "namespace" not in kustomization

"""The checked-in MnasSearch CRD and its openAPIV3Schema as a JSON Schema validator.

The API server is not here: the conversion stands in for what it checks. Objects with
``properties`` get ``additionalProperties: false`` (the API server's strict field
validation, kubectl's default, refuses unknown fields), ``nullable`` becomes a "null" type,
and ``x-kubernetes-*`` extensions are left to the API server (CEL rules are not run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from services.operator.crd import CRD_PATH

ROOT = Path(__file__).resolve().parents[2]


def checked_in_crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / CRD_PATH).read_text())
    return document


def openapi_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and node.get("type") == "object":
        out["additionalProperties"] = False
    return out


def validator(crd: dict[str, Any] | None = None) -> jsonschema.Draft202012Validator:
    schema = to_json_schema(openapi_schema(crd or checked_in_crd()))
    # metadata is the API server's to check (ObjectMeta), not the CRD's.
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )

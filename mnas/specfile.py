"""Search specs as YAML (or JSON) files, mapped onto ``mnas.v1.SearchSpec``.

The mapping is protobuf's JSON mapping (``json_format``): field names as in the proto,
enums by name. For convenience ``objective.kind`` also takes ``soft``, ``hard`` and
``absolute``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from google.protobuf import json_format

from mnas.v1 import common_pb2

__all__ = ["KIND_ALIASES", "load_spec", "parse_spec", "spec_from_document"]

# Short names ``objective.kind`` takes beside the enum's own (also in the MnasSearch CRD).
KIND_ALIASES = {
    "soft": "OBJECTIVE_KIND_SOFT",
    "hard": "OBJECTIVE_KIND_HARD",
    "absolute": "OBJECTIVE_KIND_ABSOLUTE",
}


def load_spec(path: str | Path) -> common_pb2.SearchSpec:
    """Read a spec file; ``ValueError`` says what is wrong, naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read: {err.strerror}") from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "spec") -> common_pb2.SearchSpec:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{source}: malformed YAML{at}: {problem}") from None
    return spec_from_document(document, source=source)


def spec_from_document(document: object, *, source: str = "spec") -> common_pb2.SearchSpec:
    """A spec from its parsed YAML or JSON (a MnasSearch's ``spec``, say); ``ValueError``
    says what is wrong, naming ``source``."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ValueError(
            f"{source}: expected a mapping of spec fields, got {type(document).__name__}"
        )
    document = dict(document)
    objective = document.get("objective")
    if isinstance(objective, dict) and isinstance(objective.get("kind"), str):
        kind = objective["kind"]
        document["objective"] = {**objective, "kind": KIND_ALIASES.get(kind.lower(), kind)}
    try:
        return json_format.ParseDict(document, common_pb2.SearchSpec())
    except json_format.ParseError as err:
        raise ValueError(f"{source}: {err}") from None

"""Search specs as YAML (or JSON) files, mapped onto ``mnas.v1.SearchSpec``.

The mapping is protobuf's JSON mapping (``json_format``): field names as in the proto
(or their camelCase JSON names), enums by name. For convenience ``objective.kind`` also
takes ``soft``, ``hard`` and ``absolute``. A document is read field by field, so every
unknown field and every value of the wrong type is reported at once, at its snake_case
path, with the closest valid name where one is near.

:func:`load_spec` and :func:`check_file` also run the checks of :mod:`mnas.spec_check`,
so a spec file is refused before anything starts; :func:`parse_spec` and
:func:`spec_from_document` only map (the controller checks what it is sent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor, json_format, message_factory

from mnas.spec_check import (
    Problem,
    SpecError,
    advise,
    check_spec,
    closest,
    explicit_zeros,
    in_order,
    merge,
    unknown,
)
from mnas.v1 import common_pb2

__all__ = [
    "KIND_ALIASES",
    "Checked",
    "check_document",
    "check_file",
    "load_spec",
    "parse_document",
    "parse_spec",
    "spec_from_document",
]

# Short names ``objective.kind`` takes beside the enum's own (also in the MnasSearch CRD).
KIND_ALIASES = {
    "soft": "OBJECTIVE_KIND_SOFT",
    "hard": "OBJECTIVE_KIND_HARD",
    "absolute": "OBJECTIVE_KIND_ABSOLUTE",
    "pareto": "OBJECTIVE_KIND_PARETO",
}
# Aliases by (message, field).
_ALIASES = {("mnas.v1.Objective", "kind"): KIND_ALIASES}

_FD = descriptor.FieldDescriptor
_INTEGERS = {_FD.TYPE_INT32: 32, _FD.TYPE_INT64: 64, _FD.TYPE_UINT32: 32, _FD.TYPE_UINT64: 64}
_FLOATS = {_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT}


@dataclass(frozen=True)
class Checked:
    """A spec file's outcome: the spec as far as it parsed (None when there is nothing
    to parse), what is wrong with it and what is likely not meant."""

    spec: common_pb2.SearchSpec | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]


def load_spec(path: str | Path) -> common_pb2.SearchSpec:
    """Read and check a spec file; :class:`SpecError` (a ``ValueError``) lists every
    problem."""
    checked = check_file(path)
    if checked.errors or checked.spec is None:
        raise SpecError(checked.errors)
    return checked.spec


def check_file(path: str | Path) -> Checked:
    """Read a spec file and check it all, without any service; never raises for a bad
    file."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        return Checked(None, (Problem("", f"{path}: cannot read: {reason}"),), ())
    try:
        document = _yaml(text, str(path))
    except SpecError as err:
        return Checked(None, err.problems, ())
    return check_document(document, source=str(path))


def check_document(document: object, *, source: str = "spec") -> Checked:
    """Every problem of a parsed spec document: its mapping onto the proto, the zeros it
    writes out where 0 means the default, and :func:`check_spec`'s checks."""
    spec, problems = parse_document(document, source=source)
    if not isinstance(document, Mapping) and document is not None:
        return Checked(None, tuple(problems), ())
    errors = merge(problems, explicit_zeros(document), check_spec(spec))
    return Checked(spec, _in_file_order(errors, document), _in_file_order(advise(spec), document))


def _in_file_order(problems: list[Problem], document: object) -> tuple[Problem, ...]:
    """``problems`` by top-level section in the order the file has them."""
    camel = common_pb2.SearchSpec.DESCRIPTOR.fields_by_camelcase_name
    keys = list(document) if isinstance(document, Mapping) else []
    return tuple(in_order(problems, [camel[k].name if k in camel else str(k) for k in keys]))


def parse_spec(text: str, *, source: str = "spec") -> common_pb2.SearchSpec:
    """The spec in YAML (or JSON) ``text``, mapped but not checked; :class:`SpecError`
    lists every field that does not map."""
    return spec_from_document(_yaml(text, source), source=source)


def spec_from_document(document: object, *, source: str = "spec") -> common_pb2.SearchSpec:
    """A spec from its parsed YAML or JSON (a MnasSearch's ``spec``, say), mapped but not
    checked; :class:`SpecError` lists every field that does not map."""
    spec, problems = parse_document(document, source=source)
    if problems:
        raise SpecError(problems)
    return spec


def _yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([Problem("", f"{source}: malformed YAML{at}: {problem}")]) from None


def parse_document(
    document: object, *, source: str = "spec"
) -> tuple[common_pb2.SearchSpec, list[Problem]]:
    """The spec a document maps onto, leaving out every field that does not map, and a
    problem for each of those."""
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        found = type(document).__name__
        return common_pb2.SearchSpec(), [
            Problem("", f"{source}: expected a mapping of spec fields, got {found}")
        ]
    problems: list[Problem] = []
    mapped = _message(document, common_pb2.SearchSpec.DESCRIPTOR, "", problems)
    try:
        spec = json_format.ParseDict(mapped, common_pb2.SearchSpec())
    except json_format.ParseError as err:  # checked field by field above: not expected
        problems.append(Problem("", f"{source}: {err}"))
        spec = common_pb2.SearchSpec()
    return spec, problems


def _message(
    node: Mapping[Any, Any],
    message: descriptor.Descriptor,
    path: str,
    problems: list[Problem],
) -> dict[str, Any]:
    """The fields of ``node`` that map onto ``message``, by proto name."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in node.items():
        field = None
        if isinstance(key, str):
            field = message.fields_by_name.get(key) or message.fields_by_camelcase_name.get(key)
        if field is None:
            problems.append(Problem(_join(path, str(key)), _unknown_field(key, message, path)))
            continue
        where = _join(path, field.name)
        if field.name in given:
            problems.append(Problem(where, f"given twice (as {given[field.name]} and {key})"))
            continue
        given[field.name] = key
        if value is None:
            continue  # omitted
        if field.message_type is not None:
            mapped = _message_value(value, field, where, problems)
        elif field.is_repeated:
            mapped = _repeated_value(value, field, message, where, problems)
        else:
            value = _ALIASES.get((message.full_name, field.name), {}).get(
                value.lower() if isinstance(value, str) else "", value
            )
            problem = _scalar_problem(value, field, message)
            if problem:
                problems.append(Problem(where, problem))
                continue
            mapped = value
        if mapped is not None:
            out[field.name] = mapped
    return out


def _message_value(
    value: object, field: descriptor.FieldDescriptor, where: str, problems: list[Problem]
) -> Any:
    message = field.message_type
    if message is None:
        return None
    if not field.is_repeated:
        if not isinstance(value, Mapping):
            problems.append(Problem(where, f"expected a mapping of fields, got {_show(value)}"))
            return None
        return _message(value, message, where, problems)
    if not isinstance(value, list):
        problems.append(Problem(where, f"expected a list of mappings, got {_show(value)}"))
        return None
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            problems.append(Problem(f"{where}[{i}]", f"expected a mapping, got {_show(item)}"))
            continue
        items.append(_message(item, message, f"{where}[{i}]", problems))
    return items


def _repeated_value(
    value: object,
    field: descriptor.FieldDescriptor,
    message: descriptor.Descriptor,
    where: str,
    problems: list[Problem],
) -> Any:
    if not isinstance(value, list):
        problems.append(Problem(where, f"expected a list, got {_show(value)}"))
        return None
    items = []
    for i, item in enumerate(value):
        problem = _scalar_problem(item, field, message)
        if problem:
            problems.append(Problem(f"{where}[{i}]", problem))
        else:
            items.append(item)
    return items


def _scalar_problem(
    value: object, field: descriptor.FieldDescriptor, message: descriptor.Descriptor
) -> str | None:
    """What is wrong with ``value`` for one scalar (or one element), or None; protobuf's
    JSON mapping decides what it takes."""
    if field.enum_type is not None and isinstance(value, str):
        names = [v.name for v in field.enum_type.values if not v.name.endswith("_UNSPECIFIED")]
        if value in names:
            return None
        aliases = _ALIASES.get((message.full_name, field.name), {})
        shorts = {_short(n, field.enum_type): n for n in names}
        shorts = {short: n for short, n in shorts.items() if short not in aliases}
        return unknown("value", value, [*aliases, *names], shorts)
    if isinstance(value, bool) and field.type != _FD.TYPE_BOOL:
        return f"expected {_expected(field)}, got {_show(value)}"
    if isinstance(value, Mapping | list):
        return f"expected {_expected(field)}, got {_show(value)}"
    try:
        json_format.ParseDict({field.name: [value] if field.is_repeated else value}, _new(message))
    except Exception:  # whatever protobuf refuses, it refuses for this value
        if field.type in _INTEGERS and isinstance(value, int):
            return f"out of range for a {_INTEGERS[field.type]}-bit integer, got {value}"
        return f"expected {_expected(field)}, got {_show(value)}"
    return None


@cache
def _new_class(message: descriptor.Descriptor) -> Any:
    return message_factory.GetMessageClass(message)


def _new(message: descriptor.Descriptor) -> Any:
    return _new_class(message)()


def _short(name: str, enum: descriptor.EnumDescriptor) -> str:
    """``OPTIMIZER_RMSPROP`` -> ``rmsprop``: the value's name less the enum's prefix."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return name.removeprefix(prefix).lower()


def _expected(field: descriptor.FieldDescriptor) -> str:
    if field.enum_type is not None:
        names = [v.name for v in field.enum_type.values if not v.name.endswith("_UNSPECIFIED")]
        return "one of " + ", ".join(names)
    if field.type in _INTEGERS:
        return "an integer"
    if field.type in _FLOATS:
        return "a number"
    if field.type == _FD.TYPE_BOOL:
        return "true or false"
    return "a string (quote it)" if field.type == _FD.TYPE_STRING else "a value"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unknown_field(key: object, message: descriptor.Descriptor, path: str) -> str:
    names = list(message.fields_by_name)
    if isinstance(key, str):
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
        guess = closest(snake, names)
        if guess:
            return f"unknown field; did you mean {guess!r}?"
        elsewhere = [p for p in _field_paths() if p.rsplit(".", 1)[-1] == snake]
        if elsewhere:
            return f"unknown field here; did you mean {elsewhere[0]!r}?"
    where = f"in {path}" if path else "at the top"
    return f"unknown field (fields {where}: {', '.join(names)})"


@cache
def _field_paths() -> tuple[str, ...]:
    """Every field path of a SearchSpec (``budget.max_trials``, ``space.stages.filters``)."""
    out: list[str] = []

    def walk(message: descriptor.Descriptor, prefix: str) -> None:
        for field in message.fields:
            path = _join(prefix, field.name)
            out.append(path)
            if field.message_type is not None and prefix.count(".") < 3:
                walk(field.message_type, path)

    walk(common_pb2.SearchSpec.DESCRIPTOR, "")
    return tuple(out)

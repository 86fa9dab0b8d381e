"""The Grafana dashboard of k8s/components/monitoring, read as its queries.

Grafana expands a panel's query before sending it to Prometheus: ``$search`` and the
other dashboard variables, ``$__interval`` (the step), ``$__rate_interval`` (at least four
scrape intervals) and ``$__range`` (the time range). :func:`expand` does the same, so a
test can send every query to a real Prometheus as Grafana would.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy import K8S

DASHBOARD = K8S / "components" / "monitoring" / "dashboards" / "mnas.json"
RULES = K8S / "components" / "monitoring" / "rules" / "mnas-alerts.yaml"
BUILTINS = ("__rate_interval", "__interval", "__range")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\(\s*(?P<match>.+?)\s*,\s*(?P<label>\w+)\s*\)$")


@dataclass(frozen=True)
class Query:
    """One target of one panel."""

    panel: str
    ref: str
    expr: str
    instant: bool
    repeat: str | None  # the variable the panel repeats over, if any

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(
            panel=panel["title"],
            ref=target["refId"],
            expr=target["expr"],
            instant=bool(target.get("instant")) and not target.get("range"),
            repeat=panel.get("repeat"),
        )
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def label_values(query: str) -> tuple[str, str]:
    """The series selector and the label of ``label_values(selector, label)``."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values(metric, label) query: {query!r}")
    return match["match"], match["label"]


def used_variables(expr: str) -> set[str]:
    return set(_VARIABLE.findall(expr))


def regex_of(values: list[str]) -> str:
    """How Grafana writes a multi-value variable into a Prometheus regex."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(expr: str, values: dict[str, str]) -> str:
    """``expr`` with every ``$name``/``${name}`` replaced; unknown names raise KeyError."""

    def one(match: re.Match[str]) -> str:
        return values[match[1]]

    return _VARIABLE.sub(one, expr)


class Prometheus:
    """The HTTP API of one Prometheus server."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr, time=f"{at:.3f}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        data = self.get(
            "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, selector: str, label: str, start: float, end: float) -> list[str]:
        series = self.get(
            "/api/v1/series", **{"match[]": selector, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        return sorted({s[label] for s in series if label in s})


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The sample values of an instant or range result that are numbers (not NaN or inf)."""
    values: list[float] = []
    for series in result:
        points = series.get("values") or ([series["value"]] if "value" in series else [])
        for _, text in points:
            value = float(text)
            if value == value and abs(value) != float("inf"):
                values.append(value)
    return values

"""The Grafana dashboard's JSON: its variables, that every panel has queries Prometheus
parses, that they use only the metrics the services export, and that the docs describe
every panel."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy import REPO
from tests.monitoring import grafana

DASHBOARD = grafana.load()
PANELS = grafana.panels(DASHBOARD)
QUERIES = grafana.queries(DASHBOARD)
VARIABLES = grafana.variables(DASHBOARD)

# The metric contract of the services (the names a panel may read); histograms by name.
METRICS = {
    "mnas_build_info",
    "mnas_search_trials_finished_total",
    "mnas_search_samples_per_hour",
    "mnas_search_trials_running",
    "mnas_search_budget_trials",
    "mnas_search_trials_done",
    "mnas_search_best_reward",
    "mnas_search_best_accuracy",
    "mnas_search_best_latency_seconds",
    "mnas_search_trial_retries_total",
    "mnas_search_accuracy",
    "mnas_search_reward",
    "mnas_search_trial_phase_seconds",
    "mnas_worker_capacity",
    "mnas_worker_slots_in_use",
    "mnas_worker_healthy",
    "mnas_latency_model_latency_seconds",
    "mnas_phone_healthy",
    "mnas_phone_temperature_celsius",
    "mnas_phone_battery_ratio",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds",
}
_METRIC = re.compile(r"\b(?:mnas|grpc_server)_[a-z_]+")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def test_datasource_variable_and_every_panel_uses_it() -> None:
    datasource = VARIABLES["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for panel in PANELS:
        assert panel["datasource"] == reference, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]
    for variable in VARIABLES.values():
        if variable["type"] == "query":
            assert variable["datasource"] == reference, variable["name"]


def test_search_variable_lists_the_searches_with_label_values() -> None:
    search = VARIABLES["search"]
    assert search["type"] == "query"
    selector, label = grafana.label_values(search["query"])
    assert label == "search"
    assert selector.split("{")[0] in METRICS
    assert search["multi"] and search["includeAll"]


def test_every_panel_has_a_query_and_a_unique_id() -> None:
    assert PANELS
    for panel in PANELS:
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} [{target['refId']}] is empty"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]] + [p["id"] for p in PANELS]
    assert len(set(ids)) == len({id(p) for p in [*DASHBOARD["panels"], *PANELS]})
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_queries_use_only_the_metric_contract_and_known_variables() -> None:
    known = set(VARIABLES) | set(grafana.BUILTINS)
    for query in QUERIES:
        names = {_HISTOGRAM_SERIES.sub("", n) for n in _METRIC.findall(query.expr)}
        assert names, query.name
        assert names <= METRICS, f"{query.name}: {sorted(names - METRICS)} not in the contract"
        assert grafana.used_variables(query.expr) <= known, query.name
        if any(n.startswith("mnas_search_") for n in names):
            assert 'search=~"$search"' in query.expr, f"{query.name} ignores $search"
        if query.repeat is not None:
            assert f"${query.repeat}" in query.expr, query.name


def test_variables_read_metrics_of_the_contract() -> None:
    for variable in VARIABLES.values():
        if variable["type"] != "query":
            continue
        selector, _ = grafana.label_values(variable["query"])
        name = _HISTOGRAM_SERIES.sub("", selector.split("{")[0])
        assert name in METRICS, variable["name"]


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables expanded) as the expression of a rule."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    values = {
        "search": "s-1",
        "device_model": "(Pixel 1|host)",
        "__interval": "15s",
        "__rate_interval": "1m",
        "__range": "6h",
    }
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana.expand(q.expr, values)}
        for i, q in enumerate(QUERIES)
    ]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_docs_describe_every_panel() -> None:
    docs = (REPO / "docs" / "monitoring.md").read_text()
    for panel in PANELS:
        title = panel["title"].split(":")[0] if panel.get("repeat") else panel["title"]
        assert f"**{title}**" in docs, f"docs/monitoring.md lacks the panel {title}"
    for query in QUERIES:
        assert query.expr in docs, f"docs/monitoring.md lacks the query of {query.name}"


def test_the_docs_show_a_small_picture_of_the_dashboard() -> None:
    docs = (REPO / "docs" / "monitoring.md").read_text()
    assert "](monitoring-dashboard.png)" in docs
    picture = REPO / "docs" / "monitoring-dashboard.png"
    assert picture.is_file(), "draw it with scripts/plot_dashboard.py (docs/monitoring.md)"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size < 200_000


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_variables_can_be_expanded(name: str) -> None:
    assert grafana.expand(f"${{{name}}}", {name: "x"}) == "x"

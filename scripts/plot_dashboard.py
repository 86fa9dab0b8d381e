"""Draw a picture of the Grafana dashboard from the answers of a real Prometheus.

``python scripts/plot_dashboard.py RESULTS.json docs/monitoring-dashboard.png``, where
RESULTS.json was written by the real-Prometheus test of the dashboard
(``MNAS_DASHBOARD_RESULTS=RESULTS.json pytest -m slow tests/monitoring``). Each panel is
drawn from its queries' answers: time series as lines, histogram buckets as bars. It is
a picture of what the panels show, not a screenshot of Grafana.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLUMNS = 4


def _legend(metric: dict[str, str]) -> str:
    keep = {k: v for k, v in metric.items() if k not in ("__name__", "job", "instance")}
    return ", ".join(f"{v}" for v in keep.values())[:40] or "value"


def _number(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else math.nan


def _draw(axes: Any, answers: list[dict[str, Any]], start: float) -> None:
    for answer in answers:
        for series in answer["result"]:
            if "values" in series:
                times = [float(t) - start for t, _ in series["values"]]
                values = [_number(v) for _, v in series["values"]]
                axes.plot(times, values, linewidth=1.2, label=_legend(series["metric"]))
        instant = [s for s in answer["result"] if "value" in s]
        if instant and all("le" in s["metric"] for s in instant):
            instant.sort(key=lambda s: float(s["metric"]["le"]))
            labels = [s["metric"]["le"] for s in instant]
            axes.bar(range(len(labels)), [_number(s["value"][1]) for s in instant])
            axes.set_xticks(range(len(labels))[::3], labels[::3], fontsize=6)
        elif instant:
            labels = [_legend(s["metric"]) for s in instant]
            axes.barh(labels, [_number(s["value"][1]) for s in instant])
            axes.tick_params(axis="y", labelsize=6)
    if any("values" in s for a in answers for s in a["result"]):
        axes.set_xlabel("seconds into the search", fontsize=6)
        handles = axes.get_legend_handles_labels()[0]
        if 0 < len(handles) <= 6:
            axes.legend(fontsize=5, loc="best")
    axes.tick_params(labelsize=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    panels: dict[str, list[dict[str, Any]]] = {}
    for answer in data["panels"].values():
        panels.setdefault(answer["panel"], []).append(answer)
    rows = math.ceil(len(panels) / COLUMNS)
    figure, grid = plt.subplots(rows, COLUMNS, figsize=(4 * COLUMNS, 2.6 * rows), squeeze=False)
    for axes, (title, answers) in zip(grid.flat, panels.items(), strict=False):
        axes.set_title(title, fontsize=8)
        _draw(axes, answers, data["start"])
    for axes in list(grid.flat)[len(panels) :]:
        axes.axis("off")
    figure.suptitle("mnas dashboard: the panels' queries after a small search", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.output, dpi=60)


if __name__ == "__main__":
    main()

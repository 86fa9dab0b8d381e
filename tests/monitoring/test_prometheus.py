"""Every query of the Grafana dashboard returns data from a real Prometheus.

A small real search runs on loopback: the four services as processes (real training on a
Fashion-MNIST subset, a real reward service), the latency service started with
``--phones`` against the loopback adb peer of tests/latency/phones. That peer speaks the
adb server's real host protocol and emulates two phones (a Pixel 1 model, their
``benchmark_model`` the stub that runs LiteRT on this machine), so the search measures
its latencies on "phones" and the phone metrics are those of a real farm. Debian's
``prometheus`` scrapes the four services every second from a generated config. Once the
search has finished and Prometheus has scraped its end, each panel's query is expanded as
Grafana expands it and sent to Prometheus's HTTP API; a query without a single number in
its answer fails the test.

With ``MNAS_DASHBOARD_RESULTS=FILE`` set, the answers are also written to FILE as JSON
(scripts/plot_dashboard.py draws docs/monitoring-dashboard.png from it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mnas.client import Client
from mnas.local import SERVICE_NAMES, Process, free_port, start_service, wait_serving
from mnas.results import SearchState
from tests.e2e.test_search import small_spec
from tests.latency.phones.adb_peer import AdbPeer
from tests.latency.phones.conftest import STUB
from tests.monitoring import grafana

pytestmark = pytest.mark.slow

SCRAPE_SECONDS = 1
TRIALS = 3
DEVICE_CLASS = "pixel-1"


@dataclass
class Run:
    """A finished search, and the Prometheus that watched it."""

    prometheus: grafana.Prometheus
    search: str
    start: float
    end: float


def farm_file(workdir: Path, peer: AdbPeer) -> Path:
    binary = workdir / "benchmark_model"
    binary.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{STUB}' \"$@\"\n")
    binary.chmod(0o755)
    farm = {
        "adb": {"host": "127.0.0.1", "port": peer.port, "timeout_seconds": 30},
        "phones": [
            {
                "model": "Pixel 1",
                "device_class": DEVICE_CLASS,
                "cpu_mask": "1",
                "benchmark_model": str(binary),
                "thermal": {"max_temperature_c": 45, "action": "flag"},
            }
        ],
    }
    path = workdir / "farm.yaml"
    path.write_text(yaml.safe_dump(farm))
    return path


def start_stack(workdir: Path, farm: Path) -> list[Process]:
    processes: list[Process] = []
    try:
        processes += [
            start_service("reward", log_dir=workdir),
            start_service("latency", log_dir=workdir, args=["--phones", str(farm)]),
            start_service(
                "trainer", log_dir=workdir, args=["--threads", str(max(1, os.cpu_count() or 1))]
            ),
        ]
        for process in processes:
            wait_serving(process, SERVICE_NAMES[process.kind])
        reward, latency, trainer = (p.address for p in processes)
        controller = start_service(
            "controller",
            log_dir=workdir,
            args=[
                "--store",
                str(workdir / "mnas.db"),
                "--reward",
                reward,
                "--latency",
                latency,
                "--trainer",
                trainer,
            ],
        )
        processes.append(controller)
        wait_serving(controller, SERVICE_NAMES["controller"])
    except BaseException:
        stop(processes)
        raise
    return processes


def stop(processes: list[Process]) -> None:
    for process in reversed(processes):
        process.terminate()


def start_prometheus(
    workdir: Path, processes: list[Process]
) -> tuple[subprocess.Popen[bytes], grafana.Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: scripts/setup.sh installs Debian's prometheus"
    targets = [f"127.0.0.1:{p.metrics_port}" for p in processes]
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": f"{SCRAPE_SECONDS}s",
                    "evaluation_interval": f"{SCRAPE_SECONDS}s",
                },
                "rule_files": [str(grafana.RULES)],
                "scrape_configs": [{"job_name": "mnas", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - the child owns it
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return server, grafana.Prometheus(f"http://127.0.0.1:{port}")


def poll(prometheus: grafana.Prometheus, expr: str, wanted: float, timeout: float) -> float:
    """Query ``expr`` until its single value is ``wanted``; returns the last value read."""
    value = math.nan
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = prometheus.instant(expr, time.time())
            value = float(result[0]["value"][1]) if result else math.nan
        except OSError:
            pass  # not listening yet
        if value == wanted:
            break
        time.sleep(0.5)  # pacing the poll of a scrape that runs every second
    return value


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("dashboard")
    with AdbPeer(workdir / "peer") as peer:
        peer.add_phone("PIXEL-A", model="Pixel 1", temperature_c=36.0, battery_level=80)
        peer.add_phone("PIXEL-B", model="Pixel 1", temperature_c=38.5, battery_level=55)
        processes = start_stack(workdir, farm_file(workdir, peer))
        server, prometheus = start_prometheus(workdir, processes)
        try:
            up = poll(prometheus, "sum(up)", float(len(processes)), timeout=60)
            assert up == len(processes), (workdir / "prometheus.log").read_text()[-2000:]
            start = time.time()
            spec = small_spec(trials=TRIALS, examples=300)
            spec.latency.device_class = DEVICE_CLASS
            with Client(processes[-1].address) as client:
                search = client.submit(spec)
                final = search.wait(timeout=600)
            assert final.state is SearchState.SUCCEEDED, final.error
            finished = f'sum(mnas_search_trials_finished_total{{search="{search.id}"}})'
            assert poll(prometheus, finished, float(TRIALS), timeout=60) == TRIALS
            yield Run(prometheus, search.id, start - 2 * SCRAPE_SECONDS, time.time())
        finally:
            server.terminate()
            server.wait(30)
            stop(processes)


def variable_values(run: Run, dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Each query variable's values, as its label_values query finds them."""
    found: dict[str, list[str]] = {}
    for name, variable in grafana.variables(dashboard).items():
        if variable["type"] != "query":
            continue
        selector, label = grafana.label_values(variable["query"])
        found[name] = run.prometheus.label_values(selector, label, run.start, run.end)
    return found


def test_every_dashboard_query_returns_data(run: Run) -> None:
    dashboard = grafana.load()
    values = variable_values(run, dashboard)
    for name, listed in values.items():
        assert listed, f"the variable ${name} lists nothing"
    assert run.search in values["search"]
    step = SCRAPE_SECONDS  # $__interval: Grafana's step, at least the scrape interval
    base = {
        "__interval": f"{step}s",
        "__rate_interval": f"{max(step + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)}s",
        "__range": f"{math.ceil(run.end - run.start)}s",
        "search": grafana.regex_of([run.search]),
    }
    empty: list[str] = []
    answers: dict[str, Any] = {}
    for query in grafana.queries(dashboard):
        repeats = values[query.repeat] if query.repeat else [""]
        for value in repeats:
            names = {**base}
            for name, listed in values.items():
                names.setdefault(name, grafana.regex_of(listed))
            label = query.name
            if query.repeat:
                names[query.repeat] = grafana.regex_of([value])
                label = f"{query.name} ({value})"
            expr = grafana.expand(query.expr, names)
            if query.instant:
                result = run.prometheus.instant(expr, run.end)
            else:
                result = run.prometheus.range(expr, run.start, run.end, f"{step}s")
            answers[label] = {
                "panel": query.panel.replace(f"${query.repeat}", value)
                if query.repeat
                else query.panel,
                "expr": expr,
                "instant": query.instant,
                "result": result,
            }
            if not grafana.finite_values(result):
                empty.append(f"{label}: {expr}")
    output = os.environ.get("MNAS_DASHBOARD_RESULTS")
    if output:
        Path(output).write_text(
            json.dumps({"start": run.start, "end": run.end, "panels": answers}, indent=1)
        )
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_the_phones_show_in_the_device_model_variable(run: Run) -> None:
    models = variable_values(run, grafana.load())["device_model"]
    assert "Pixel 1" in models


def test_no_alert_fires_for_a_healthy_search(run: Run) -> None:
    """The rules load into a real Prometheus and are evaluated, and a search that went well
    alerts nothing, not even pending (the alerts' `for:` outlasts this short search, so
    pending is what a wrong rule would show)."""
    rules = run.prometheus.get("/api/v1/rules")
    loaded = {r["name"]: r for g in rules["groups"] for r in g["rules"]}
    assert "MnasPhoneHot" in loaded
    assert all(
        r.get("health") == "ok" and r.get("lastEvaluation", "").startswith("20")
        for r in loaded.values()
    ), loaded
    alerts = run.prometheus.get("/api/v1/alerts")["alerts"]
    assert alerts == []

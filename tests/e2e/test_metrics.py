"""Every service's /metrics passes promtool, and Debian's Prometheus really scrapes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnas.client import Client
from mnas.local import LocalStack, free_port
from tests.e2e.test_search import small_spec

pytestmark = pytest.mark.slow

SEARCH_ID = "metrics"
EVERY_SERVICE = ["mnas_build_info"]
REQUIRED = {
    "controller": [
        *EVERY_SERVICE,
        "mnas_search_trials_finished_total",
        "mnas_search_samples_per_hour",
        "mnas_search_trials_running",
        "mnas_search_budget_trials",
        "mnas_search_budget_failed_trials",
        "mnas_search_best_reward",
        "mnas_search_best_accuracy",
        "mnas_search_best_latency_seconds",
        "mnas_search_trial_retries_total",
        "mnas_search_trial_seconds",
        "mnas_search_trial_phase_seconds",
        "mnas_search_accuracy",
        "mnas_search_reward",
        "mnas_worker_capacity",
        "mnas_worker_slots_in_use",
        "mnas_worker_healthy",
        "mnas_controller_model_latency_seconds",
        "mnas_grpc_server_in_flight_calls",
        "grpc_server_handled_total",
    ],
    "trainer": [*EVERY_SERVICE, "mnas_trainer_jobs_in_flight", "mnas_trainer_job_seconds"],
    "latency": [
        *EVERY_SERVICE,
        "mnas_latency_model_latency_seconds",
        "mnas_latency_export_seconds",
    ],
    "reward": [*EVERY_SERVICE, "mnas_reward_scores_total", "grpc_server_handling_seconds"],
}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def stack_after_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("metrics")
    with LocalStack(workdir=workdir, store=str(workdir / "mnas.db")) as stack:
        with Client(stack.controller) as client:
            client.submit(small_spec(trials=1, examples=300), search_id=SEARCH_ID).wait(timeout=300)
        yield stack


def test_metrics_pass_promtool(stack_after_search: LocalStack) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    for process in stack_after_search.processes:
        text = scrape(process.metrics_port)
        for name in REQUIRED[process.name.split("-")[0]]:
            assert name in text, f"{process.name} lacks {name}"
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text, text=True, capture_output=True, check=False
        )
        assert result.returncode == 0, f"{process.name}: {result.stdout}{result.stderr}"
    controller = scrape(stack_after_search.process("controller").metrics_port)
    search = f'search="{SEARCH_ID}"'
    assert f'mnas_search_trials_finished_total{{{search},state="completed"}} 1.0' in controller
    assert f"mnas_search_budget_trials{{{search}}} 1.0" in controller
    assert f"mnas_search_accuracy_count{{{search}}} 1.0" in controller
    training = f'mnas_search_trial_phase_seconds_count{{phase="training",{search}}} 1.0'
    assert training in controller
    assert 'mnas_build_info{role="controller",version="' in controller


def test_prometheus_scrapes_every_service(stack_after_search: LocalStack, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: scripts/setup.sh installs Debian's prometheus"
    targets = [f"127.0.0.1:{p.metrics_port}" for p in stack_after_search.processes]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: mnas\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = f"http://127.0.0.1:{port}/api/v1/query?query=sum(up)"
        total = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and total < len(targets):
            try:
                with urllib.request.urlopen(query, timeout=5) as response:
                    result = json.load(response)["data"]["result"]
                total = float(result[0]["value"][1]) if result else 0.0
            except OSError:
                pass  # not listening yet
            if total < len(targets):
                time.sleep(0.5)  # pacing the poll of a scrape that runs every second
        assert total == len(targets)
        query = f"http://127.0.0.1:{port}/api/v1/query?query=mnas_search_trials_finished_total"
        with urllib.request.urlopen(query, timeout=5) as response:
            series = json.load(response)["data"]["result"]
        assert any(
            s["metric"].get("state") == "completed" and s["metric"].get("search") == SEARCH_ID
            for s in series
        )
        query = f"http://127.0.0.1:{port}/api/v1/query?query=mnas_build_info"
        with urllib.request.urlopen(query, timeout=5) as response:
            series = json.load(response)["data"]["result"]
        roles = {s["metric"]["role"] for s in series}
        assert roles == {p.name.split("-")[0] for p in stack_after_search.processes}
    finally:
        server.terminate()
        server.wait(30)

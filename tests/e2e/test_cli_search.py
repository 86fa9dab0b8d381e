"""``mnas search`` as a user runs it: a subprocess that starts the services, runs a spec,
prints the best trials and the Pareto front, and exits 0."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPEC = """
name: cli
seed: 5
space: {resolution: 28, width: 0.5}
objective: {kind: hard, target_latency_seconds: 0.001}
budget: {max_trials: 2}
training: {train_examples: 500, validation_examples: 300, batch_size: 50}
latency: {warmup_runs: 1, runs: 3}
"""


def test_mnas_search_runs_a_spec_and_prints_results(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    mnas = Path(sys.executable).parent / "mnas"
    result = subprocess.run(
        [
            str(mnas),
            "search",
            str(spec),
            "--store",
            str(tmp_path / "mnas.db"),
            "--logs",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "succeeded: 2 completed, 0 stopped early, 0 failed" in out
    assert "best 2 by reward" in out
    # The space's reference network, trained once beside the trials on the same proxy.
    assert (
        "reference mobilenetv2-like (space reference) at width 0.5, 28x28: held-out accuracy 0."
    ) in out
    assert "Pareto front: accuracy vs latency" in out
    assert "#0: r" in out or "#1: r" in out
    assert (tmp_path / "mnas.db").exists()


def test_mnas_search_refuses_a_bad_spec_before_starting_anything(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("budget: {max_trials: [}")
    mnas = Path(sys.executable).parent / "mnas"
    result = subprocess.run(
        [str(mnas), "search", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("mnas: error: ")
    assert "malformed YAML" in result.stderr
    assert not (tmp_path / "mnas.db").exists()


def test_mnas_up_serves_until_interrupted(tmp_path: Path) -> None:
    import signal

    from mnas.local import Process, free_port, wait_serving

    port = free_port()
    mnas = Path(sys.executable).parent / "mnas"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [
                str(mnas),
                "up",
                "--target",
                f"127.0.0.1:{port}",
                "--store",
                str(tmp_path / "mnas.db"),
                "--logs",
                str(tmp_path / "logs"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    up = Process(name="up", popen=popen, port=port, metrics_port=0, log_path=log)
    try:
        wait_serving(up, "mnas.v1.Controller", timeout=180)
        # SERVING can come before `mnas up` has printed the addresses: wait for its line.
        deadline = time.monotonic() + 60
        while "Ctrl-C stops" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # pacing the poll of a log file
        assert "Ctrl-C stops" in log.read_text(), log.read_text()  # on one line: unwrapped
        popen.send_signal(signal.SIGINT)
        assert popen.wait(60) == 0, log.read_text()
    finally:
        up.kill()
    text = log.read_text()
    for name in ("controller", "trainer-0", "latency", "reward"):
        assert name in text

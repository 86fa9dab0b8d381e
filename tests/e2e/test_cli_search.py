"""``mnas search`` as a user runs it: a subprocess that starts the services, runs a spec,
prints the best trials and the Pareto front, and exits 0."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SPEC = """
name: cli
seed: 5
space: {resolution: 28, width: 0.5}
objective: {kind: hard, target_latency_seconds: 0.001}
budget: {max_trials: 2}
training: {train_examples: 500, validation_examples: 300, batch_size: 50}
latency: {warmup_runs: 1, runs: 3}
"""


@pytest.mark.slow
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


@pytest.mark.slow
def test_mnas_search_with_a_pareto_objective_prints_the_front(tmp_path: Path) -> None:
    """No target latency: real training, real LiteRT latency, and the front as the result."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        SPEC.replace("{kind: hard, target_latency_seconds: 0.001}", "{kind: pareto}").replace(
            "max_trials: 2", "max_trials: 3"
        )
        + "reference: none\n"
    )
    mnas = Path(sys.executable).parent / "mnas"
    argv = [str(mnas), "search", str(spec), "--store", str(tmp_path / "mnas.db")]
    argv += ["--logs", str(tmp_path / "logs"), "--report", str(tmp_path / "report.html")]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "objective pareto: the front of accuracy against latency, no target" in out
    assert "succeeded: 3 completed, 0 stopped early, 0 failed" in out
    assert "Pareto front: accuracy vs latency (" in out
    assert "by reward" not in out
    assert "<h2>Pareto front: " in (tmp_path / "report.html").read_text()


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


def _start_up(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """``mnas up`` on ``port``, its output in a log file."""
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
    return popen, log


@contextlib.contextmanager
def _mnas_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, list[int]]]:
    """A running ``mnas up`` whose banner is out, its log, and its services' process ids."""
    from mnas.local import Process, free_port, wait_serving

    port = free_port()
    popen, log = _start_up(tmp_path, port)
    up = Process(name="up", popen=popen, port=port, metrics_port=0, log_path=log)
    try:
        wait_serving(up, "mnas.v1.Controller", timeout=180)
        # SERVING can come before `mnas up` has printed the addresses: wait for its line.
        deadline = time.monotonic() + 60
        while "Ctrl-C stops" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # pacing the poll of a log file
        assert "Ctrl-C stops" in log.read_text(), log.read_text()  # on one line: unwrapped
        children = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
        yield popen, log, [int(pid) for pid in children]
    finally:
        up.kill()


def _gone(pid: int, timeout: float = 60.0) -> bool:
    """Whether process ``pid`` has exited (reaped or a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)  # polling another process's exit
    return False


@pytest.mark.slow
def test_mnas_up_serves_until_interrupted(tmp_path: Path) -> None:
    with _mnas_up(tmp_path) as (popen, log, children):
        assert len(children) == 4  # controller, trainer, latency, reward
        popen.send_signal(signal.SIGINT)
        assert popen.wait(60) == 0, log.read_text()
    text = log.read_text()
    for name in ("controller", "trainer-0", "latency", "reward"):
        assert name in text
    assert all(_gone(pid) for pid in children)


@pytest.mark.slow
def test_mnas_up_stops_its_services_on_sigterm_as_on_ctrl_c(tmp_path: Path) -> None:
    with _mnas_up(tmp_path) as (popen, log, children):
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(60) == 0, log.read_text()
    assert [pid for pid in children if not _gone(pid)] == []


@pytest.mark.slow
def test_the_services_of_a_killed_mnas_up_end_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves `mnas up` no chance to stop its services: they get SIGTERM from the
    kernel when it dies (Linux's parent-death signal) and stop on their own."""
    with _mnas_up(tmp_path) as (popen, _log, children):
        popen.kill()
        popen.wait(60)
    assert [pid for pid in children if not _gone(pid)] == []


@pytest.mark.slow
def test_mnas_up_refuses_a_taken_port_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        popen, log = _start_up(tmp_path, port)
        assert popen.wait(60) == 2
    lines = log.read_text().strip().splitlines()
    assert lines == [
        f"mnas: error: --target: port {port} is taken (another `mnas up` or service "
        "listens on it); stop it or choose another port"
    ]
    assert not (tmp_path / "logs").exists()  # nothing was started


def _wait_for_line(log: Path, prefix: str, timeout: float = 60.0) -> str:
    """The first line of ``log`` that starts with ``prefix``, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.1)  # pacing the poll of a log file
    raise AssertionError(f"no line starting {prefix!r} in {log}:\n{log.read_text()}")


@pytest.mark.slow
def test_mnas_up_prints_the_addresses_the_other_commands_read(tmp_path: Path) -> None:
    """The `export` line of `mnas up` is all the other commands need, the latency
    commands included (their default port is where `mnas up` puts the latency service)."""
    import json
    import os

    mnas = Path(sys.executable).parent / "mnas"
    with _mnas_up(tmp_path) as (_popen, log, _children):
        line = _wait_for_line(log, "export ")
        names = dict(pair.split("=", 1) for pair in line.split()[1:])
        assert set(names) == {"MNAS_TARGET", "MNAS_LATENCY_TARGET", "MNAS_STORE"}
        controller_port = int(names["MNAS_TARGET"].rpartition(":")[2])
        assert names["MNAS_LATENCY_TARGET"] == f"127.0.0.1:{controller_port + 1}"
        assert names["MNAS_STORE"] == str(tmp_path / "mnas.db")
        env = {**os.environ, **names}
        for argv in (["list", "-o", "json"], ["devices", "-o", "json"]):
            result = subprocess.run(
                [str(mnas), *argv], capture_output=True, text=True, env=env, timeout=120
            )
            assert result.returncode == 0, result.stderr
            json.loads(result.stdout)
        devices = subprocess.run(
            [str(mnas), "devices", "-o", "json"], capture_output=True, text=True, env=env
        )
        assert "host-cpu" in {d["device_class"] for d in json.loads(devices.stdout)}


LONG_SPEC = """
name: interrupted
seed: 5
space: {resolution: 28, width: 0.5}
objective: {kind: hard, target_latency_seconds: 0.001}
budget: {max_trials: 200}
training: {train_examples: 500, validation_examples: 300, batch_size: 50}
latency: {warmup_runs: 1, runs: 3}
reference: none
"""


@pytest.mark.slow
def test_ctrl_c_in_mnas_search_leaves_the_search_to_resume_and_says_so(tmp_path: Path) -> None:
    """Interrupted, `mnas search` says the search stays in the store and how to resume or
    cancel it; the store holds it running, and `mnas up` on that store resumes it and
    says so."""
    import queue
    import threading

    from services.controller.store import Store

    spec = tmp_path / "spec.yaml"
    spec.write_text(LONG_SPEC)
    store = tmp_path / "mnas.db"
    mnas = Path(sys.executable).parent / "mnas"
    search = subprocess.Popen(
        [str(mnas), "search", str(spec), "--store", str(store), "--logs", str(tmp_path / "a")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = search.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:  # a thread, so that waiting for a line can time out
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    search_id = ""
    while not search_id:
        line = lines.get(timeout=180)
        if line.startswith("submitted search "):
            search_id = line.split()[2].rstrip(":")
    search.send_signal(signal.SIGINT)
    err = search.stderr.read() if search.stderr else ""
    search.wait(120)
    reader.join(60)
    assert search.returncode == 130, err
    assert err.splitlines() == [
        f"mnas: interrupted: search {search_id} stays running in the store {store} and "
        "resumes, where it stood, when a controller next starts on it: "
        f"`mnas up --store {store}`, then `mnas watch {search_id}` follows it and "
        f"`mnas cancel {search_id}` ends it"
    ]
    kept = Store.open(str(store))
    try:
        record = kept.get_search(search_id)
    finally:
        kept.close()
    assert record is not None
    from mnas.v1 import common_pb2

    assert record.state == common_pb2.SEARCH_STATE_RUNNING
    with _mnas_up(tmp_path) as (_popen, log, _children):
        line = _wait_for_line(log, f"resumed search {search_id} (interrupted) from the store: ")
        assert f"`mnas cancel {search_id}` ends it" in line

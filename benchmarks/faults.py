"""What survives a fault: real processes on loopback, one fault per scenario, figures.

Each scenario starts the services as separate processes (controller on SQLite, two
trainers, latency, reward; ``mnas.local.start_service``), submits a small real search
(8 trials of tiny networks trained on Fashion-MNIST subsets, latency measured with
LiteRT), injects its fault while trials are in flight, and waits for the search to end:

- ``trainer-killed``: trainer 1 is SIGKILLed while it trains a trial (its in-flight gauge
  says so), and stays dead;
- ``controller-killed``: the controller (PPO strategy) is SIGKILLed mid-search, after at
  least one policy update, and started again on the same store;
- ``latency-restarted``: the latency service is SIGKILLed while trials run and started
  again on the same port;
- ``worker-network-hang``: trainer 1 is reached through a TCP proxy that stops
  forwarding (no reset, no data: ``benchmarks.tcp_proxy``) while it trains a trial;
- ``store-disk-full``: the SQLite store lives on a 64 MiB tmpfs, which is filled to the
  last byte for 10 s while trials run (needs the right to mount; skipped without it);
- ``postgres-restarted``: the store is a PostgreSQL cluster the scenario makes itself
  (``initdb``, ``pg_ctl`` on a temporary directory and port), restarted (``pg_ctl restart
  -m fast``) while trials run (skipped without PostgreSQL's server binaries);
- ``phone-dropped``: latency is measured on two phones behind an adb server (a loopback
  peer that speaks adb's protocol: no phone is attached here), and one falls off the bus
  in the middle of its measurement.

Per scenario: ``succeeded`` (the search ended SUCCEEDED), ``trials_lost`` (trials that
ended FAILED, plus the budget's trials never completed when the search did not succeed),
``trials_duplicated`` (completed trial records beyond the budget, or a trial number
recorded complete twice), ``recovery_seconds`` (from the fault until every trial that was
in flight when it struck has ended: completed again elsewhere or after the restart) and
``seconds`` (the whole search).

    python -m benchmarks.faults [--scenario NAME ...]

Last line: one JSON object, ``{"scenarios": {NAME: {...}}, ...}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks.tcp_proxy import TcpProxy
from mnas.client import Client, ControllerUnavailable
from mnas.local import SERVICE_NAMES, Process, free_port, start_service, wait_serving
from mnas.specfile import parse_spec
from mnas.v1 import common_pb2

SPEC = """
name: faults
seed: 7
strategy: %(strategy)s
ppo: {batch_size: 2}
space: {preset: small-images, resolution: 28, width: 0.25}
objective: {kind: soft, target_latency_seconds: 0.0002}
budget: {max_trials: %(trials)d, parallel_trials: 2, max_attempts: 3}
training: {train_examples: 512, validation_examples: 256, epochs: 1, batch_size: 64}
latency: {warmup_runs: 1, runs: 3, device_class: %(device_class)s}
reference: none
"""
TRIALS = 8
_T = TypeVar("_T")
START_TIMEOUT = 180.0
SEARCH_TIMEOUT = 900.0
POLL_SECONDS = 0.1


@dataclass
class Stack:
    """The services of one scenario, by name, and the proxy in front of trainer 1."""

    workdir: Path
    processes: dict[str, Process] = field(default_factory=dict)
    proxy: TcpProxy | None = None
    store_dir: Path | None = None
    restart_store: Callable[[], None] | None = None
    phones: PhoneFarm | None = None

    @property
    def controller(self) -> str:
        return self.processes["controller"].address

    def start(
        self,
        *,
        proxied: bool = False,
        store_dir: Path | None = None,
        store_url: str = "",
        farm: Path | None = None,
    ) -> Stack:
        for kind, name, args in (
            ("reward", "reward", []),
            ("latency", "latency", ["--phones", str(farm)] if farm is not None else []),
            ("trainer", "trainer-0", ["--threads", "1"]),
            ("trainer", "trainer-1", ["--threads", "1"]),
        ):
            self.processes[name] = start_service(kind, log_dir=self.workdir, name=name, args=args)
        for process in self.processes.values():
            wait_serving(process, SERVICE_NAMES[process.kind], START_TIMEOUT)
        trainer_1 = self.processes["trainer-1"].address
        if proxied:
            self.proxy = TcpProxy(trainer_1).start()
            trainer_1 = self.proxy.address
        self.store_dir = store_dir or self.workdir
        args = [
            *("--store", store_url or str(self.store_dir / "mnas.db")),
            *("--reward", self.processes["reward"].address),
            *("--latency", self.processes["latency"].address),
            *("--trainer", self.processes["trainer-0"].address),
            *("--trainer", trainer_1),
        ]
        self.processes["controller"] = start_service("controller", log_dir=self.workdir, args=args)
        wait_serving(self.processes["controller"], SERVICE_NAMES["controller"], START_TIMEOUT)
        return self

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        """SIGKILL ``name`` and start it again with the same arguments and port."""
        old = self.processes[name]
        old.kill()
        new = start_service(
            old.kind, log_dir=self.workdir, args=old.args, name=old.name, port=old.port
        )
        self.processes[name] = new
        wait_serving(new, SERVICE_NAMES[new.kind], START_TIMEOUT)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        if self.proxy is not None:
            self.proxy.close()


def jobs_in_flight(process: Process) -> float:
    """A trainer's ``mnas_trainer_jobs_in_flight``, from its /metrics (0 if unreadable)."""
    try:
        url = f"http://127.0.0.1:{process.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    match = re.search(r"^mnas_trainer_jobs_in_flight (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _ask(stack: Stack, question: Callable[[Client], _T]) -> _T | None:
    """``question`` put to the controller now; None while it cannot be reached."""
    try:
        with Client(stack.controller, timeout=10) as client:
            return question(client)
    except ControllerUnavailable:
        return None


def _poll(read: Callable[[], _T | None], done: Callable[[_T], bool], what: str) -> _T:
    """``read()`` again until its answer is ``done``; that answer."""
    deadline = time.monotonic() + SEARCH_TIMEOUT
    while time.monotonic() < deadline:
        answer = read()
        if answer is not None and done(answer):
            return answer
        time.sleep(POLL_SECONDS)  # polling another process's progress
    raise TimeoutError(f"{what} not in {SEARCH_TIMEOUT:.0f} s")


def _search(stack: Stack, search_id: str) -> common_pb2.Search | None:
    return _ask(stack, lambda client: client.search(search_id).proto)


def _wait(
    stack: Stack, search_id: str, ready: Callable[[common_pb2.Search], bool]
) -> common_pb2.Search:
    return _poll(lambda: _search(stack, search_id), ready, f"search {search_id}: condition")


_TERMINAL = {
    common_pb2.TRIAL_STATE_COMPLETED,
    common_pb2.TRIAL_STATE_STOPPED,
    common_pb2.TRIAL_STATE_FAILED,
    common_pb2.TRIAL_STATE_CANCELLED,
}


def _trial_states(stack: Stack, search_id: str) -> dict[int, int] | None:
    """Each trial's state by number; None while the controller cannot be reached."""
    return _ask(
        stack,
        lambda client: {t.number: int(t.proto.state) for t in client.search(search_id).trials()},
    )


def _unfinished(stack: Stack, search_id: str) -> set[int]:
    states = _trial_states(stack, search_id) or {}
    return {number for number, state in states.items() if state not in _TERMINAL}


def _wait_finished(stack: Stack, search_id: str, numbers: set[int]) -> float:
    """When every trial of ``numbers`` had ended (``time.monotonic()``)."""
    _poll(
        lambda: _trial_states(stack, search_id),
        lambda states: all(states.get(n) in _TERMINAL for n in numbers),
        f"search {search_id}: the end of trials {sorted(numbers)}",
    )
    return time.monotonic()


def _ended(info: common_pb2.Search) -> bool:
    return info.state != common_pb2.SEARCH_STATE_RUNNING


@dataclass(frozen=True)
class Scenario:
    strategy: str
    proxied: bool
    # Whether to inject the fault now: the stack and the search as it stands.
    ready: Callable[[Stack, common_pb2.Search], bool]
    inject: Callable[[Stack], None]
    small_disk: bool = False  # the store on a tmpfs of its own
    postgres: bool = False  # the store in a PostgreSQL cluster of its own
    phones: bool = False  # latency measured on two phones of a loopback adb server


class CannotRun(Exception):
    """The scenario needs what this machine does not give (a mount)."""


@contextlib.contextmanager
def small_disk(workdir: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted for the scenario (``CannotRun`` without the right)."""
    mount = workdir / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CannotRun(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL cluster of the scenario's own (trust auth, loopback, a free port):
    its URL and a function that restarts it. As root, the server runs as the user
    ``postgres`` (PostgreSQL refuses to run as root)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise CannotRun("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    bin_dir = found[-1].parent
    data = Path(tempfile.mkdtemp(prefix="mnas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w"]
    pg(*ctl, "-o", options, "start")
    try:
        yield (
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
            lambda: pg(*ctl, "-m", "fast", "-o", options, "restart"),
        )
    finally:
        subprocess.run([*as_user, *ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _restart_store(stack: Stack) -> None:
    assert stack.restart_store is not None
    stack.restart_store()


PHONE_CLASS = "pixel-1"


class PhoneFarm:
    """Two phones (PHONE-A, PHONE-B) on a loopback adb server that speaks adb's protocol
    (``tests.latency.phones.adb_peer``: no phone is attached here), their farm file, and
    a hold on PHONE-A's next measurement: ``measuring`` is set when it starts, and it
    goes on only once ``release`` is set (or the phone is gone)."""

    def __init__(self, workdir: Path) -> None:
        from tests.latency.phones.adb_peer import AdbPeer

        self.peer = AdbPeer(workdir / "adb-peer")
        self.measuring = threading.Event()
        self.release = threading.Event()
        stub = Path(__file__).resolve().parents[1] / "tests/latency/phones/benchmark_model_stub.py"
        binary = workdir / "benchmark_model"
        binary.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{stub}' \"$@\"\n")
        binary.chmod(0o755)
        self.farm = workdir / "farm.yaml"
        self.farm.write_text(
            json.dumps(
                {
                    "adb": {"host": "127.0.0.1", "port": 0, "timeout_seconds": 30},
                    "phones": [
                        {
                            "model": "Pixel 1",
                            "device_class": PHONE_CLASS,
                            "cpu_mask": "1",
                            "benchmark_model": str(binary),
                            "thermal": {"max_temperature_c": 45, "action": "flag"},
                        }
                    ],
                }
            )
        )

    def _hold(self, command: str) -> None:
        if "--graph" in command and not self.measuring.is_set():
            self.measuring.set()
            self.release.wait(timeout=120)

    def __enter__(self) -> PhoneFarm:
        self.peer.__enter__()
        self.peer.add_phone("PHONE-A", on_shell=self._hold)
        self.peer.add_phone("PHONE-B")
        document = json.loads(self.farm.read_text())
        document["adb"]["port"] = self.peer.port
        self.farm.write_text(json.dumps(document))  # JSON is YAML
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.peer.close()

    def drop_measuring_phone(self) -> None:
        """PHONE-A falls off the bus in the middle of its measurement."""
        self.peer.drop("PHONE-A")
        self.release.set()


def _phone_measuring(stack: Stack, info: common_pb2.Search) -> bool:
    return stack.phones is not None and stack.phones.measuring.is_set()


def _drop_phone(stack: Stack) -> None:
    assert stack.phones is not None
    stack.phones.drop_measuring_phone()


FULL_DISK_SECONDS = 10.0


def fill_disk(directory: Path) -> Path:
    """Fill the disk of ``directory`` to the last byte; the file that takes the room."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(bytes(1 << 16))
    return filler


def _fill_disk_for_a_while(stack: Stack) -> None:
    """The store's disk full to the last byte for FULL_DISK_SECONDS, then room again."""
    assert stack.store_dir is not None
    filler = fill_disk(stack.store_dir)
    time.sleep(FULL_DISK_SECONDS)  # the fault lasts this long: it is the scenario
    filler.unlink()


def _trainer_1_busy(stack: Stack, info: common_pb2.Search) -> bool:
    return info.trials_completed >= 1 and jobs_in_flight(stack.processes["trainer-1"]) >= 1


def _learned(stack: Stack, info: common_pb2.Search) -> bool:
    return info.strategy_status.updates >= 1 and info.trials_running > 0


def _running(stack: Stack, info: common_pb2.Search) -> bool:
    return info.trials_completed >= 1 and info.trials_running > 0


def _hang(stack: Stack) -> None:
    assert stack.proxy is not None
    stack.proxy.hang()


SCENARIOS: dict[str, Scenario] = {
    "trainer-killed": Scenario("random", False, _trainer_1_busy, lambda s: s.kill("trainer-1")),
    "controller-killed": Scenario("ppo", False, _learned, lambda s: s.restart("controller")),
    "latency-restarted": Scenario("random", False, _running, lambda s: s.restart("latency")),
    "worker-network-hang": Scenario("random", True, _trainer_1_busy, _hang),
    "store-disk-full": Scenario("random", False, _running, _fill_disk_for_a_while, small_disk=True),
    "postgres-restarted": Scenario("random", False, _running, _restart_store, postgres=True),
    "phone-dropped": Scenario("random", False, _phone_measuring, _drop_phone, phones=True),
}


def run_scenario(name: str, workdir: Path) -> dict[str, object]:
    """The scenario's figures; ``CannotRun`` when this machine cannot stage it."""
    scenario = SCENARIOS[name]
    with contextlib.ExitStack() as resources:
        stack = Stack(workdir)
        store_dir, store_url = None, ""
        if scenario.small_disk:
            store_dir = resources.enter_context(small_disk(workdir))
        if scenario.postgres:
            store_url, stack.restart_store = resources.enter_context(postgres_cluster())
        farm = None
        if scenario.phones:
            stack.phones = resources.enter_context(PhoneFarm(workdir))
            farm = stack.phones.farm
        stack.start(proxied=scenario.proxied, store_dir=store_dir, store_url=store_url, farm=farm)
        return _run(name, stack)


def _run(name: str, stack: Stack) -> dict[str, object]:
    scenario = SCENARIOS[name]
    try:
        device_class = PHONE_CLASS if scenario.phones else "host-cpu"
        spec = parse_spec(
            SPEC % {"strategy": scenario.strategy, "trials": TRIALS, "device_class": device_class}
        )
        started = time.monotonic()
        with Client(stack.controller) as client:
            search_id = client.submit(spec).id
        before = _wait(
            stack,
            search_id,
            lambda info: _ended(info) or scenario.ready(stack, info),
        )
        if _ended(before):
            raise RuntimeError(f"{name}: the search ended before the fault could be injected")
        in_flight = _unfinished(stack, search_id)  # the trials the fault can hit
        fault_at = time.monotonic()
        scenario.inject(stack)
        recovery = _wait_finished(stack, search_id, in_flight) - fault_at
        final = _wait(stack, search_id, _ended)
        seconds = time.monotonic() - started
        with Client(stack.controller) as client:
            trials = [t.proto for t in client.search(search_id).trials()]
    finally:
        stack.stop()
    completed = [t.number for t in trials if t.state == common_pb2.TRIAL_STATE_COMPLETED]
    failed = sum(t.state == common_pb2.TRIAL_STATE_FAILED for t in trials)
    succeeded = final.state == common_pb2.SEARCH_STATE_SUCCEEDED
    lost = failed + (0 if succeeded else max(0, TRIALS - len(set(completed))))
    duplicated = max(0, len(completed) - TRIALS) + (len(completed) - len(set(completed)))
    return {
        "succeeded": succeeded,
        "trials_lost": lost,
        "trials_duplicated": duplicated,
        "recovery_seconds": round(recovery, 1),
        "trials_in_flight_at_fault": len(in_flight),
        "seconds": round(seconds, 1),
        "error": final.error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only these (repeatable; default: all)",
    )
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    results: dict[str, dict[str, object]] = {}
    for name in names:
        workdir = Path(tempfile.mkdtemp(prefix=f"mnas-faults-{name}-"))
        try:
            results[name] = run_scenario(name, workdir)
        except CannotRun as err:
            print(json.dumps({"scenario": name, "skipped": str(err)}), file=sys.stderr)
            continue
        print(json.dumps({"scenario": name, **results[name]}), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "scenarios": results,
                "all_succeeded": all(r["succeeded"] for r in results.values()),
                "trials_lost": sum(int(str(r["trials_lost"])) for r in results.values()),
                "trials_duplicated": sum(
                    int(str(r["trials_duplicated"])) for r in results.values()
                ),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The usable cores (affinity, cgroup v1/v2 quotas), the idle ones, and the threads a
training gets."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from mnas.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer import cores, slots
from services.trainer.cores import (
    cgroup_cpu_limit,
    cpu_idle_ticks,
    idle_cores,
    idle_share,
    threads_per_slot,
    threads_to_use,
    usable_cores,
)
from services.trainer.server import TrainerConfig, TrainerMetrics, TrainerServicer, make_server
from services.trainer.training import TrainOutcome


def fake_root(tmp_path: Path, proc_cgroup: str, files: dict[str, str] | None = None) -> Path:
    """A fake / with ``proc/self/cgroup`` and the given files under ``sys/fs/cgroup``."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(proc_cgroup)
    for name, text in (files or {}).items():
        path = tmp_path / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process may run on eight CPUs."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


@pytest.mark.usefixtures("eight_cores")
def test_affinity_counts_when_no_cgroup_limits(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root) is None
    assert usable_cores(root) == 8


def test_affinity_not_cpu_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cores(fake_root(tmp_path, "0::/\n")) == 2


def test_without_sched_getaffinity_falls_back_to_cpu_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores(fake_root(tmp_path, "0::/\n")) == 6


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),  # 1.5 CPUs: rounded up
        ("50000 100000\n", 1),  # half a CPU: still one thread
        ("100000000 100000\n", 8),  # more than the affinity: the affinity counts
        ("max 100000\n", 8),
    ],
)
def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = fake_root(tmp_path, "0::/pod/trainer\n", {"pod/trainer/cpu.max": cpu_max})
    assert usable_cores(root) == expected


@pytest.mark.usefixtures("eight_cores")
def test_cgroup_v2_nested_takes_the_smallest_quota_up_the_hierarchy(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "kubepods/cpu.max": "max 100000\n",
            "kubepods/pod1/cpu.max": "300000 100000\n",  # the pod's limit: 3 CPUs
            "kubepods/pod1/ctr/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_limit(root) == 3
    assert usable_cores(root) == 3


@pytest.mark.usefixtures("eight_cores")
def test_cgroup_v2_namespaced_path_missing_reads_the_mount_root(tmp_path: Path) -> None:
    # In a container the path may be the host's while /sys/fs/cgroup is the container's.
    root = fake_root(tmp_path, "0::/host/slice/abc\n", {"cpu.max": "400000 100000\n"})
    assert usable_cores(root) == 4


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_quota(tmp_path: Path, mount: str) -> None:
    root = fake_root(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            f"{mount}/docker/abc/cpu.cfs_quota_us": "250000\n",
            f"{mount}/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_limit(root) == 3  # 2.5 CPUs, rounded up
    assert usable_cores(root) == 3


@pytest.mark.usefixtures("eight_cores")
def test_cgroup_v1_unlimited_and_nested(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "3:cpu,cpuacct:/a/b\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/a/cpu.cfs_quota_us": "100000\n",
            "cpu,cpuacct/a/cpu.cfs_period_us": "50000\n",
            "cpu,cpuacct/a/b/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/a/b/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cores(root) == 2


@pytest.mark.usefixtures("eight_cores")
def test_hybrid_takes_the_smaller_of_v1_and_v2(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        "1:cpu:/\n0::/\n",
        {
            "cpu/cpu.cfs_quota_us": "-1\n",
            "cpu/cpu.cfs_period_us": "100000\n",
            "unified/cpu.max": "500000 100000\n",
        },
    )
    assert usable_cores(root) == 5


@pytest.mark.usefixtures("eight_cores")
def test_no_proc_or_sys_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cores(tmp_path) == 8


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize("cpu_max", ["", "garbage\n", "abc 100000\n", "100000 0\n", "-5 100000\n"])
def test_malformed_quota_means_no_limit(tmp_path: Path, cpu_max: str) -> None:
    root = fake_root(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert cgroup_cpu_limit(root) is None
    assert usable_cores(root) == 8


@pytest.mark.usefixtures("eight_cores")
def test_unreadable_files_mean_no_limit(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "0::/a\n", {"a/cpu.max": "100000 100000\n"})
    # A directory where a file should be cannot be read, whoever runs the test.
    (root / "proc/self/cgroup").unlink()
    (root / "proc/self/cgroup").mkdir()
    assert usable_cores(root) == 8
    root = fake_root(tmp_path / "second", "0::/a\n")
    (root / "sys/fs/cgroup/a/cpu.max").mkdir(parents=True)
    assert usable_cores(root) == 8
    root = fake_root(tmp_path / "third", "0::/\n")
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cpu.max").write_bytes(b"\xff\xfe 100000\n")  # not text
    assert usable_cores(root) == 8


@pytest.mark.usefixtures("eight_cores")
def test_v1_quota_without_period_means_no_limit(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "2:cpu:/\n", {"cpu/cpu.cfs_quota_us": "100000\n"})
    assert usable_cores(root) == 8


def test_usable_cores_of_this_process_is_within_the_affinity() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("slots", "available", "expected"), [(1, 8, 8), (3, 8, 2), (4, 2, 1), (1, 1, 1)]
)
def test_threads_per_slot_shares_the_cores(slots: int, available: int, expected: int) -> None:
    assert threads_per_slot(slots, available) == expected


def test_threads_per_slot_rejects_no_slots() -> None:
    with pytest.raises(ValueError, match="slots"):
        threads_per_slot(0, 4)


def test_trainer_default_threads_come_from_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda root="/": 6)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)

    def servicer(config: TrainerConfig) -> TrainerServicer:
        return TrainerServicer(config, TrainerMetrics(CollectorRegistry()))

    assert servicer(TrainerConfig(max_concurrent=1, isolate=False)).threads == 6
    assert servicer(TrainerConfig(max_concurrent=2, isolate=False)).threads == 3
    assert servicer(TrainerConfig(max_concurrent=4, isolate=False)).threads == 1
    assert servicer(TrainerConfig(max_concurrent=2, threads=5, isolate=False)).threads == 5
    reply = servicer(TrainerConfig(max_concurrent=2, isolate=False)).GetCapacity(
        common_pb2.GetCapacityRequest(),
        context=None,  # type: ignore[arg-type]
    )
    assert reply.hardware.startswith("cpu x3 (")


# --- idle cores and the threads of a training starting now -----------------------------

STAT = """cpu  900 0 300 2000 40 0 10 0 0 0
cpu0 400 0 100 1000 20 0 5 0 0 0
cpu1 500 0 200 1000 20 0 5 0 0 0
intr 12345 0 0
ctxt 999
"""


def write_stat(root: Path, idle: dict[int, tuple[int, int]]) -> None:
    """A fake /proc/stat with the given (idle, iowait) ticks per CPU."""
    lines = ["cpu  1 2 3 4 5 6 7 8 9 10"]
    lines += [f"cpu{cpu} 10 0 10 {i} {w} 0 0 0 0 0" for cpu, (i, w) in idle.items()]
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/stat").write_text("\n".join([*lines, "ctxt 5", ""]))


def test_cpu_idle_ticks_reads_idle_and_iowait_per_cpu(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text(STAT)
    assert cpu_idle_ticks(tmp_path) == {0: 1020, 1: 1020}


def test_cpu_idle_ticks_without_proc_stat_is_none(tmp_path: Path) -> None:
    assert cpu_idle_ticks(tmp_path) is None
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text("cpu  1 2 3 4 5\ncpuX a b c d e f\n")
    assert cpu_idle_ticks(tmp_path) is None


@pytest.mark.parametrize(
    ("before", "after", "cpus", "expected"),
    [
        ({0: 0, 1: 0}, {0: 100, 1: 100}, {0, 1}, 2.0),  # both idle for the whole second
        ({0: 0, 1: 0}, {0: 100, 1: 0}, {0, 1}, 1.0),  # one busy
        ({0: 0, 1: 0}, {0: 50, 1: 50}, {0, 1}, 1.0),  # both half busy
        ({0: 0, 1: 0}, {0: 100, 1: 100}, {1}, 1.0),  # only CPUs of the affinity count
        ({0: 0, 1: 0}, {0: 130, 1: 0}, {0, 1}, 1.0),  # tick jitter: at most 1 per CPU
        ({0: 50}, {0: 40}, {0}, 0.0),  # a counter going back counts as busy
        ({0: 0}, {0: 100, 1: 100}, {0, 1}, 1.0),  # a CPU missing from a reading is skipped
    ],
)
def test_idle_share(
    before: dict[int, int], after: dict[int, int], cpus: set[int], expected: float
) -> None:
    assert idle_share(before, after, 1.0, cpus, 100.0) == pytest.approx(expected)


def test_idle_share_of_no_time_is_zero() -> None:
    assert idle_share({0: 0}, {0: 100}, 0.0, {0}, 100.0) == 0.0


def test_idle_cores_reads_proc_stat_across_the_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Over a half-second window, CPU 0 stays idle and CPU 1 is busy."""
    write_stat(tmp_path, {0: (1000, 0), 1: (1000, 0)})
    now = [100.0]

    def sleep(seconds: float) -> None:  # the window passes without waiting
        now[0] += seconds
        write_stat(tmp_path, {0: (1040, 10), 1: (1000, 1)})

    clock = types.SimpleNamespace(monotonic=lambda: now[0], sleep=sleep)
    monkeypatch.setattr(cores, "time", clock)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    assert idle_cores(0.5, tmp_path) == pytest.approx(1.02)
    assert threads_to_use(2, 0.5, tmp_path) == 1
    assert threads_to_use(2, 0.5, tmp_path / "nowhere") == 2  # unreadable: the limit


@pytest.mark.parametrize(
    ("limit", "idle", "expected"),
    [
        (2, 2.0, 2),  # quiet
        (2, 1.0, 1),  # one core busy elsewhere
        (2, 1.6, 2),  # a core more than half idle counts
        (2, 1.4, 1),
        (2, 0.0, 1),  # at least one
        (4, 7.5, 4),  # never more than the limit
        (3, None, 3),  # unknown: the limit
    ],
)
def test_threads_to_use_fits_the_idle_cores(
    monkeypatch: pytest.MonkeyPatch, limit: int, idle: float | None, expected: int
) -> None:
    monkeypatch.setattr(cores, "idle_cores", lambda window, root: idle)
    assert threads_to_use(limit) == expected


def test_a_training_gets_the_threads_of_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer asks for the threads as each CPU training starts, within its share."""
    asked: list[int] = []
    trained: list[Any] = []

    def fit(limit: int) -> int:
        asked.append(limit)
        return 1

    def fake_train(*args: Any, **kwargs: Any) -> TrainOutcome:
        trained.append(kwargs["threads"])
        return TrainOutcome(accuracy=0.5, loss=1.0, seconds=0.1, samples_seen=10)

    monkeypatch.setattr(cores, "usable_cores", lambda root="/": 6)
    monkeypatch.setattr(slots, "threads_to_use", fit)
    monkeypatch.setattr(slots, "train", fake_train)
    running = make_server(TrainerConfig(max_concurrent=2, isolate=False), CollectorRegistry())
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = trainer_pb2_grpc.TrainerStub(channel)
            replies = list(stub.Train(TRAIN_REQUEST, timeout=30))
    finally:
        running.stop(grace=0)
    assert replies[-1].HasField("result")
    assert asked == [3]  # six usable cores, two slots
    assert trained == [1]


TRAIN_REQUEST = trainer_pb2.TrainRequest(
    architecture=common_pb2.Architecture(
        canonical="stem:8 r1_k3_s11_e1_i8_o8 head:64 act:relu dropout:0"
    ),
    build=common_pb2.BuildParams(resolution=28, num_classes=10, width=1.0),
    training=common_pb2.Training(
        dataset="fashion-mnist",
        epochs=1,
        batch_size=32,
        learning_rate=0.05,
        seed=1,
        train_examples=1000,
        validation_examples=500,
    ),
)

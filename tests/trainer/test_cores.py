"""The usable cores (affinity, cgroup v1/v2 quotas) and the threads a training gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mnas.v1 import common_pb2
from services.trainer import cores
from services.trainer.cores import cgroup_cpu_limit, threads_per_slot, usable_cores
from services.trainer.server import TrainerConfig, TrainerMetrics, TrainerServicer


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
